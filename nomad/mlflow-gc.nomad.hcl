# MLflow's garbage collection: a Nomad periodic batch job that `inv deploy` registers beside the service job as
# {job_name}-gc when the setting gc_older_than is set (gc_schedule: when; see docs/day-two.md). Each launch is a
# child job {job_name}-gc/periodic-<epoch>; `nomad job periodic force mlflow-gc` runs one now.
#
# The task is the MLflow image's /usr/local/bin/mlflow-gc.py (docker/mlflow-gc.py): `mlflow gc --older-than X` on
# the store, with the artifacts logged through the server (mlflow-artifacts:/ URIs) removed from the artifacts
# volume mounted here as the server mounts it, then a check that what gc was to remove is gone; what is left is
# said and the launch fails (exit 1). store = postgres: the database's URL from this job's own Nomad Variable
# nomad/jobs/{job_name}-gc (deploy writes it), never in this file.

variable "image" {
  type        = string
  description = "The MLflow image deploy registers (its MLflow runs gc)."
}

variable "arch" {
  type    = string
  default = "amd64"
}

variable "datacenters" {
  type    = list(string)
  default = ["DC0"]
}

variable "region" {
  type    = string
  default = "global"
}

variable "user" {
  type        = string
  description = "uid:gid the task runs as: the image's user, owner of the two host volume folders."
  default     = "1000:1000"
}

variable "store" {
  type    = string
  default = "sqlite"

  validation {
    condition     = contains(["sqlite", "postgres"], var.store)
    error_message = "The store must be sqlite or postgres."
  }
}

variable "job_name" {
  type        = string
  description = "The service job's name: this job is {job_name}-gc and reads its Variable nomad/jobs/{job_name}-gc."
  default     = "mlflow"
}

variable "older_than" {
  type        = string
  description = "mlflow gc --older-than: runs deleted more than this long ago (#d#h#m#s, like 30d)."

  validation {
    condition     = var.older_than != "" && regex_replace(var.older_than, "^([0-9.]+d)?([0-9.]+h)?([0-9.]+m)?([0-9.]+s)?$", "") == ""
    error_message = "The older_than must be MLflow's #d#h#m#s, like 30d or 12h."
  }
}

variable "schedule" {
  type        = string
  description = "Nomad's cron: when gc runs (UTC)."
  default     = "0 4 * * *"
}

variable "artifacts_path" {
  type        = string
  description = "The artifacts folder on the client (the host volume mlflow-artifacts): said in the output."
  default     = "/opt/nomad/data/mlflow/artifacts"
}

job "mlflow-gc" {
  type        = "batch"
  region      = var.region
  datacenters = var.datacenters

  # prohibit_overlap: a launch never starts while the previous one runs; deploy stops this job during a
  # release (the deploy lock's holder), so gc never runs while a new version migrates or starts.
  periodic {
    crons            = [var.schedule]
    prohibit_overlap = true
    time_zone        = "UTC"
  }

  group "gc" {
    count = 1

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

    # A failed gc stays failed (the next launch tries again); doctor's `gc` row says what it left.
    restart {
      attempts = 0
      mode     = "fail"
    }

    reschedule {
      attempts  = 0
      unlimited = false
    }

    task "gc" {
      driver = "docker"
      user   = var.user

      constraint {
        attribute = "${attr.cpu.arch}"
        operator  = "set_contains_any"
        value     = var.arch
      }

      config {
        image      = var.image
        entrypoint = ["python", "/usr/local/bin/mlflow-gc.py"]
        args       = ["--older-than", var.older_than, "--artifacts-destination", "/mnt/artifacts",
                      "--shown-as", var.artifacts_path]
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

      # store = postgres: the database's URL from this job's Variable (a launch reads its parent's:
      # nomad/jobs/{job_name}-gc), never in the job's text.
      dynamic "template" {
        for_each = var.store == "postgres" ? ["nomad/jobs/${var.job_name}-gc"] : []
        content {
          data        = "{{ with nomadVar \"${template.value}\" }}MLFLOW_BACKEND_STORE_URI={{ .database_url }}{{ end }}\n"
          destination = "secrets/database.env"
          env         = true
          change_mode = "noop"
        }
      }

      env {
        MLFLOW_BACKEND_STORE_URI = var.store == "sqlite" ? "sqlite:////mnt/backend_store/mlflow.db" : "from-the-template:nomad/jobs/${var.job_name}-gc"
      }

      resources {
        cpu    = 100
        memory = 512
      }
    }
  }
}
