# The MLflow tracking server on Nomad. `inv deploy` parses this file on the agent with the variables
# below (from the settings), plans it, and registers it with a check-and-set index.
# By hand: nomad job run -var image=registry.lan:5000/mlflow:v0.99 -var arch=amd64 nomad/mlflow.nomad.hcl
# (add -var service_provider=consul when your Traefik reads Consul's catalogue, -var traefik_entrypoints=web
# to bind the router to an entry point).

variable "image" {
  type        = string
  description = "The MLflow image, always a pinned version tag: {registry}/{image}:v{version}."

  validation {
    # Nomad's HCL functions have regex_replace but no regex: a whole match replaced leaves "".
    condition     = var.image != "" && regex_replace(var.image, "^[^:@]+(:[0-9]+)?/.+:v[0-9]+([.][0-9]+)*$", "") == ""
    error_message = "The image must carry a pinned version tag such as registry.lan:5000/mlflow:v0.99 (never latest)."
  }
}

variable "arch" {
  type        = string
  description = "The image's architectures as Nomad names a client's cpu.arch (amd64, arm64, arm), comma-separated: the job runs only on such clients. inv deploy reads them from the image in the registry."
  default     = "amd64"

  validation {
    condition     = var.arch != "" && regex_replace(var.arch, "^[a-z0-9_]+(,[a-z0-9_]+)*$", "") == ""
    error_message = "The arch must be Go architecture names such as amd64 or arm64, comma-separated."
  }
}

variable "datacenters" {
  type        = list(string)
  description = "Datacenters the job may run in."
  default     = ["DC0"]
}

variable "region" {
  type        = string
  description = "Nomad region."
  default     = "global"
}

variable "domain" {
  type        = string
  description = "The name MLflow is served under behind Traefik: the Host() rule and MLflow's allowed hosts."
  default     = "mlflow.lan"
}

variable "service_provider" {
  type        = string
  description = "Where the service is registered for the proxy: consul (Consul's catalogue, Nomad's default, what Traefik's consulCatalog provider reads; the job then needs a client with Consul) or nomad (Nomad's own, what Traefik's nomad provider reads). inv deploy passes the service_provider setting."
  default     = "nomad"

  validation {
    condition     = contains(["consul", "nomad"], var.service_provider)
    error_message = "The service_provider must be consul or nomad."
  }
}

variable "traefik_entrypoints" {
  type        = string
  description = "Traefik entry points the router is bound to, comma-separated (web, or web,websecure); empty: no entrypoints tag, so Traefik serves it on all its entry points."
  default     = ""

  validation {
    condition     = regex_replace(var.traefik_entrypoints, "^([A-Za-z0-9_-]+(,[A-Za-z0-9_-]+)*)?$", "") == ""
    error_message = "The traefik_entrypoints must be entry point names such as web or web,websecure, comma-separated, or empty."
  }
}

variable "https" {
  type        = bool
  description = "The router serves TLS (traefik.http.routers.mlflow.tls=true) on traefik_tls_entrypoints; plain HTTP on traefik_entrypoints is redirected to https (plain_http = redirect) or not routed (refuse). inv deploy passes the https setting."
  default     = false
}

variable "traefik_tls_entrypoints" {
  type        = string
  description = "https = true: Traefik entry points of the TLS router, comma-separated (websecure); empty: no entrypoints tag, so all of them."
  default     = "websecure"

  validation {
    condition     = regex_replace(var.traefik_tls_entrypoints, "^([A-Za-z0-9_-]+(,[A-Za-z0-9_-]+)*)?$", "") == ""
    error_message = "The traefik_tls_entrypoints must be entry point names such as websecure, comma-separated, or empty."
  }
}

variable "traefik_certresolver" {
  type        = string
  description = "https = true: the Traefik certificate resolver that gets the router's certificate (letsencrypt); empty: Traefik's default certificate (its own, or the one of its file provider's default store)."
  default     = ""

  validation {
    condition     = regex_replace(var.traefik_certresolver, "^[A-Za-z0-9_-]*$", "") == ""
    error_message = "The traefik_certresolver must be a certificate resolver's name such as letsencrypt, or empty."
  }
}

variable "plain_http" {
  type        = string
  description = "https = true: redirect (a second router, mlflow-http, on traefik_entrypoints with the redirectScheme middleware mlflow-https to https) or refuse (no router for plain HTTP: Traefik answers 404 there)."
  default     = "redirect"

  validation {
    condition     = contains(["redirect", "refuse"], var.plain_http)
    error_message = "The plain_http must be redirect or refuse."
  }
}

variable "store" {
  type        = string
  description = "MLflow's tracking store: sqlite (mlflow.db on the backend host volume: one allocation) or postgres (the database whose URL the template below reads from the Nomad Variable database_variable: several allocations)."
  default     = "sqlite"

  validation {
    condition     = contains(["sqlite", "postgres"], var.store)
    error_message = "The store must be sqlite or postgres."
  }
}

variable "database_variable" {
  type        = string
  description = "store = postgres: the Nomad Variable whose item database_url is the database's URL (postgresql+psycopg2://...); nomad/jobs/<job name>, which the job's tasks may read by default. inv deploy writes it before the register."
  default     = "nomad/jobs/mlflow"
}

variable "database_revision" {
  type        = string
  description = "store = postgres or auth = basic: the revision of the database's URL and the auth secrets in the Variable (when inv deploy wrote them): the templates read its items database_url_<revision>, admin_password_<revision> and secret_key_<revision>, so a new value changes the job and Nomad replaces the allocations one at a time, and an older job version reads its own."
  default     = ""
}

variable "auth" {
  type        = string
  description = "basic: MLflow's auth app (users and permissions in basic_auth.db beside mlflow.db, or in the PostgreSQL store's database), its admin's password and secret key read from the Variable database_variable; none: no logins."
  default     = "none" # inv deploy always passes the setting auth (basic by default): `nomad job run` by hand needs -var auth=basic and the Variable's items

  validation {
    condition     = contains(["basic", "none"], var.auth)
    error_message = "The auth must be basic or none."
  }
}

variable "admin_username" {
  type        = string
  description = "auth = basic: MLflow's admin, made at the first start with the password from the Variable."
  default     = "admin"
}

variable "auth_cache_seconds" {
  type        = number
  description = "auth = basic: how long the server keeps a checked password (MLflow's auth_cache_ttl_seconds); 0: checked at every request."
  default     = 30
}

variable "allocations" {
  type        = number
  description = "Allocations of MLflow: 1 with sqlite (one writer); with postgres several, replaced one at a time by the update block. inv deploy passes the count setting (0 there: 1 for sqlite, 2 for postgres)."
  default     = 1
}

variable "shutdown_delay" {
  type        = string
  description = "store = postgres: how long a stopped allocation keeps serving after its service left the catalogue, so that the proxy (Traefik reads the catalogue every 15s by default) stops sending it requests first. 0s with sqlite."
  default     = "20s"
}

variable "cpu" {
  type        = number
  description = "CPU for the task, in MHz."
  default     = 200
}

variable "memory" {
  type        = number
  description = "Memory for the task, in MB."
  default     = 512
}

variable "metrics" {
  type        = bool
  description = "The server's Prometheus endpoint /metrics (mlflow server --expose-prometheus), and the service's prometheus.io/scrape=true and prometheus.io/path=/metrics tags a Prometheus reading the catalogue (nomad_sd_configs, consul_sd_configs) keeps by. inv deploy passes the metrics setting."
  default     = true
}

variable "workers" {
  type        = number
  description = "MLflow server workers (uvicorn)."
  default     = 1
}

variable "user" {
  type        = string
  description = "uid:gid the task runs as: the image's user, owner of the two host volume folders."
  default     = "1000:1000"
}

# How a new version proves itself. A crashing task is restarted restart_attempts times, restart_delay
# apart (plus up to 25% jitter), then fails; a task that runs but never passes its check is unhealthy
# at healthy_deadline. Either fails the deployment at once (no reschedule, see below) and Nomad
# reverts to the last stable version.
# A check every 2 s and 10 s of passing checks: a new version is healthy after about 5 checks in a row
# (any failure starts the 10 s again) instead of 1 or 2 at 10 s, and is seen passing at most 2 s after
# its server answers, not up to 10 s (BENCHMARKS.md, "Release to healthy"). The failure tolerance is
# the same: a failing check never fails the allocation by itself, healthy_deadline does.
variable "check_interval" {
  type        = string
  description = "How often Nomad asks /health (the first check comes after half of it)."
  default     = "2s"
}

variable "min_healthy_time" {
  type        = string
  description = "How long the task must run with its check passing to count as healthy."
  default     = "10s"
}

variable "healthy_deadline" {
  type        = string
  description = "A new allocation not healthy by then is unhealthy."
  default     = "3m"
}

variable "progress_deadline" {
  type        = string
  description = "A deployment with no allocation turning healthy for this long fails (> healthy_deadline)."
  default     = "10m"
}

variable "restart_attempts" {
  type        = number
  description = "Restarts of a task that exits, before its allocation fails."
  default     = 2
}

variable "restart_delay" {
  type        = string
  description = "Wait before each restart."
  default     = "15s"
}

job "mlflow" {
  type        = "service"
  region      = var.region
  datacenters = var.datacenters

  group "svc" {
    # SQLite has one writer: one allocation (inv deploy refuses more). With PostgreSQL, several: the update
    # block below replaces them one at a time, so one always serves.
    count = var.allocations

    # store = postgres: a stopped allocation leaves the catalogue first and keeps serving this long, until the
    # proxy has dropped it ("0s" with sqlite, Nomad's default: Nomad refuses a null duration).
    shutdown_delay = var.store == "postgres" ? var.shutdown_delay : "0s"

    network {
      port "mlflow_http" {
        to = 5000
      }
    }

    volume "mlflow-backend-store" {
      type      = "host"
      source    = "mlflow-backend-store"
      read_only = false
    }

    volume "mlflow-artifacts" {
      type      = "host"
      source    = "mlflow-artifacts"
      read_only = false
    }

    restart {
      attempts = var.restart_attempts
      delay    = var.restart_delay
      interval = "30m"
      mode     = "fail"
    }

    # No reschedule: the first allocation that fails (or is unhealthy) fails the deployment at once,
    # instead of Nomad's default of rescheduling it forever until progress_deadline. With one node and
    # one SQLite file there is nowhere else to go; a lost node's allocation is still replaced.
    reschedule {
      attempts  = 0
      unlimited = false
    }

    # A new version must pass its health check; if it does not, Nomad goes back to the last stable one.
    # One allocation at a time (max_parallel = 1): an old one is stopped and its replacement placed; the
    # next old one only once that replacement has been healthy for min_healthy_time. With count >= 2 the
    # others serve meanwhile (with count = 1 a release has a gap, as SQLite's single writer requires).
    update {
      max_parallel      = 1
      health_check      = "checks"
      min_healthy_time  = var.min_healthy_time
      healthy_deadline  = var.healthy_deadline
      progress_deadline = var.progress_deadline
      auto_revert       = true
    }

    service {
      name     = "mlflow"
      port     = "mlflow_http"
      provider = var.service_provider
      # The entrypoints tag only when entry points are named: a Traefik without an entry point of that
      # name ignores the router, one without the tag serves it on every entry point.
      # https: the router mlflow is TLS only (Traefik's default certificate, or the resolver's), on the TLS entry
      # points; plain_http = redirect adds the router mlflow-http for plain HTTP, whose only middleware redirects to
      # https:// (301, 308 for a method other than GET); refuse: no router for plain HTTP (Traefik's 404).
      tags = compact([
        "traefik.enable=true",
        "traefik.http.routers.mlflow.rule=Host(`${var.domain}`)",
        var.https ? "" : (var.traefik_entrypoints == "" ? "" : "traefik.http.routers.mlflow.entrypoints=${var.traefik_entrypoints}"),
        var.https ? "traefik.http.routers.mlflow.tls=true" : "",
        var.https && var.traefik_tls_entrypoints != "" ? "traefik.http.routers.mlflow.entrypoints=${var.traefik_tls_entrypoints}" : "",
        var.https && var.traefik_certresolver != "" ? "traefik.http.routers.mlflow.tls.certresolver=${var.traefik_certresolver}" : "",
        var.https && var.plain_http == "redirect" ? "traefik.http.routers.mlflow-http.rule=Host(`${var.domain}`)" : "",
        var.https && var.plain_http == "redirect" && var.traefik_entrypoints != "" ? "traefik.http.routers.mlflow-http.entrypoints=${var.traefik_entrypoints}" : "",
        var.https && var.plain_http == "redirect" ? "traefik.http.routers.mlflow-http.middlewares=mlflow-https" : "",
        var.https && var.plain_http == "redirect" ? "traefik.http.middlewares.mlflow-https.redirectscheme.scheme=https" : "",
        var.https && var.plain_http == "redirect" ? "traefik.http.middlewares.mlflow-https.redirectscheme.permanent=true" : "",
        var.metrics ? "prometheus.io/scrape=true" : "",
        var.metrics ? "prometheus.io/path=/metrics" : "",
      ])

      # /health is exempt from MLflow's Host header check, so the agent can ask it by IP.
      check {
        name     = "mlflow-health"
        type     = "http"
        path     = "/health"
        interval = var.check_interval
        timeout  = "3s"
      }
    }

    task "mlflow_app" {
      driver = "docker"
      user   = var.user

      # Only on clients that run the image's architecture: an image of another one starts and dies at
      # once with "exec format error" (Nomad's docker driver pulls whatever the tag holds).
      constraint {
        attribute = "${attr.cpu.arch}"
        operator  = "set_contains_any"
        value     = var.arch
      }

      config {
        image = var.image
        ports = ["mlflow_http"]
      }

      volume_mount {
        volume      = "mlflow-backend-store"
        destination = "/mnt/backend_store"
        read_only   = false
      }

      volume_mount {
        volume      = "mlflow-artifacts"
        destination = "/mnt/artifacts"
        read_only   = false
      }

      # store = postgres: the database's URL from the Nomad Variable, never in the job's text. Nomad renders
      # it into the task's environment (a template's variables override the env block's); the task waits
      # while the Variable is missing. A new URL is not a restart of every task at once (change_mode noop):
      # deploy writes it at a new revision, whose item the template reads, so the job changes and the
      # update block replaces the allocations one at a time; an older job version reads its own revision's.
      dynamic "template" {
        for_each = var.store == "postgres" ? [var.database_variable] : []
        content {
          data        = "{{ with nomadVar \"${template.value}\" }}MLFLOW_BACKEND_STORE_URI={{ .database_url_${var.database_revision} }}{{ end }}\n"
          destination = "secrets/database.env"
          env         = true
          change_mode = "noop"
        }
      }

      # auth = basic: MLflow's auth app (MLFLOW_AUTH=basic), the admin's password and the server's secret key
      # from the same Variable, at the same revision (hex-encoded: the env file carries any character; the
      # entrypoint decodes them), never in the job's text. auth = none: no template, the job of before.
      dynamic "template" {
        for_each = var.auth == "basic" ? [var.database_variable] : []
        content {
          data        = "MLFLOW_AUTH=basic\nMLFLOW_AUTH_ADMIN_USERNAME=${var.admin_username}\nMLFLOW_AUTH_CACHE_SECONDS=${var.auth_cache_seconds}\n{{ with nomadVar \"${template.value}\" }}MLFLOW_AUTH_ADMIN_PASSWORD_HEX={{ .admin_password_${var.database_revision} }}\nMLFLOW_FLASK_SERVER_SECRET_KEY_HEX={{ .secret_key_${var.database_revision} }}{{ end }}\n"
          destination = "secrets/auth.env"
          env         = true
          change_mode = "noop"
        }
      }

      # The image's entrypoint contract (docker/entrypoint.sh).
      env {
        MLFLOW_BACKEND_STORE_URI           = var.store == "sqlite" ? "sqlite:////mnt/backend_store/mlflow.db" : "from-the-template:${var.database_variable}"
        MLFLOW_ARTIFACTS_DESTINATION       = "/mnt/artifacts"
        MLFLOW_PORT                        = "5000"
        MLFLOW_WORKERS                     = "${var.workers}"
        MLFLOW_EXPOSE_PROMETHEUS           = var.metrics ? "true" : "false"
        MLFLOW_DOMAIN                      = var.domain
        MLFLOW_SERVER_ALLOWED_HOSTS        = "${var.domain},${var.domain}:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*,[::1]:*"
        MLFLOW_SERVER_CORS_ALLOWED_ORIGINS = "http://${var.domain},https://${var.domain},http://localhost,http://localhost:*,http://127.0.0.1,http://127.0.0.1:*"
      }

      resources {
        cpu    = var.cpu
        memory = var.memory
      }
    }
  }
}
