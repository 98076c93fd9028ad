# The nightly backup of MLflow's store: a Nomad periodic batch job that `inv deploy` registers beside the service
# job as {job_name}-backup (settings backup_schedule, backup_time_zone, backup_keep, backup_copy_path; see
# docs/backups.md). Each launch is a child job {job_name}-backup/periodic-<epoch>; `nomad job periodic force
# mlflow-backup` runs one now.
#
# store = sqlite: the MLflow image's /usr/local/bin/mlflow-backup.py (python3, stdlib only) takes SQLite's online
# backup of mlflow.db (consistent while MLflow writes), checks it (PRAGMA integrity_check), publishes it in the
# backups folder as mlflow-{UTC}-v{version}.db (as `inv backup` names it, with MLflow's users as auth-{name} and
# the schema revision in {name}.schema), keeps the newest `keep`, and copies it to the second folder when set.
# store = postgres: pg_dump -Fc in pg_dump_image (the server's major), checked with pg_restore --list, the URL
# read from this job's own Nomad Variable nomad/jobs/{job_name}-backup (deploy writes it).

variable "image" {
  type        = string
  description = "The MLflow image deploy registers (its python3 and mlflow-backup.py run the SQLite backup)."
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
  description = "uid:gid the task runs as: the image's user, owner of the volume folders."
  default     = "1000:1000"
}

variable "store" {
  type        = string
  description = "sqlite or postgres (inv deploy passes the store setting)."
  default     = "sqlite"
}

variable "job_name" {
  type        = string
  description = "The service job's name: this job is {job_name}-backup and reads its Variable nomad/jobs/{job_name}-backup."
  default     = "mlflow"
}

variable "schedule" {
  type        = string
  description = "Nomad's cron: when the backup runs."
  default     = "0 3 * * *"
}

variable "time_zone" {
  type    = string
  default = "UTC"
}

variable "keep" {
  type        = number
  description = "The newest backups of the store's kept (in each folder); older ones are removed."
  default     = 7
}

variable "backups_path" {
  type        = string
  description = "The backups folder on the client (the host volume mlflow-backups): said in the output."
  default     = "/opt/nomad/data/mlflow/backups"
}

variable "copy" {
  type        = bool
  description = "Copy each backup to the host volume mlflow-backups-copy (configure-host adds it when backup_copy_path is set)."
  default     = false
}

variable "pg_dump_image" {
  type        = string
  description = "store = postgres: an image with pg_dump and pg_restore of the server's major version."
  default     = ""
}

locals {
  # store = postgres, run by bash in pg_dump_image: pg_dump -Fc (one snapshot: consistent while MLflow writes) of the
  # database at PGURL (libpq's URL without the password; the password from PGPASSWORD_HEX into PGPASSWORD, on no
  # command line), checked with pg_restore --list (its table data entries), published as `inv backup` names it
  # (mlflow-{UTC}-v{version}.dump, never over another), the schema revision beside it, the newest BACKUP_KEEP kept,
  # copied to the second folder.
  pg_script = <<-EOT
    set -euo pipefail
    export PGPASSWORD="$(printf "$(printf %s "$PGPASSWORD_HEX" | sed 's/../\\x&/g')")"
    base="mlflow-$(date -u +%Y%m%dT%H%M%SZ)-v$BACKUP_VERSION"
    tmp="$BACKUP_DIR/.$base.dump.partial"
    trap 'rm -f "$tmp"' EXIT
    pg_dump -Fc --no-password -f "$tmp" -d "$PGURL"
    data=$(pg_restore --list "$tmp" | grep -c ' TABLE DATA ' || true)
    if [ "$data" -lt 1 ]; then rm -f "$tmp"; echo '{"error": "the dump holds no table data"}'; exit 1; fi
    chmod 640 "$tmp"
    f="$BACKUP_DIR/$base.dump"; n=0
    while ! ln "$tmp" "$f" 2>/dev/null; do
      if [ ! -e "$f" ]; then echo '{"error": "cannot publish the dump in the backups folder (no hard links there?)"}'; exit 1; fi
      n=$((n+1)); f="$BACKUP_DIR/$base-$n.dump"
    done
    rm -f "$tmp"; name=$(basename "$f")
    psql --no-password -d "$PGURL" -Atc 'SELECT version_num FROM alembic_version' > "$f.schema" 2>/dev/null || rm -f "$f.schema"
    # all but the newest BACKUP_KEEP, save the newest of an older schema when none kept has one (the dump before a
    # migration: `inv rollback --restore` needs it while the newer MLflow runs)
    prune() {
      all=$(ls -1 "$1" | grep -E '^mlflow-[0-9]{8}T[0-9]{6}Z-v[0-9A-Za-z.]+(-[0-9]+)?[.]dump$' | sort -r || true)
      newest=$(head -n 1 <<< "$all"); top=$(cat "$1/$newest.schema" 2>/dev/null || true); spare=""
      if [ -n "$top" ]; then
        older_kept=$(head -n "$BACKUP_KEEP" <<< "$all" | while read -r k; do s=$(cat "$1/$k.schema" 2>/dev/null || true); if [ -n "$s" ] && [ "$s" != "$top" ]; then echo "$k"; fi; done)
        if [ -z "$older_kept" ]; then
          spare=$(tail -n +$((BACKUP_KEEP+1)) <<< "$all" | { found=""; while read -r k; do s=$(cat "$1/$k.schema" 2>/dev/null || true); if [ -z "$found" ] && [ -n "$s" ] && [ "$s" != "$top" ]; then echo "$k"; found=1; fi; done; })
        fi
      fi
      tail -n +$((BACKUP_KEEP+1)) <<< "$all" | while read -r old; do
        if [ -n "$old" ] && [ "$old" != "$spare" ]; then rm -f "$1/$old" "$1/$old.schema"; echo "removed $old"; fi
      done
    }
    prune "$BACKUP_DIR"
    if [ -n "$BACKUP_COPY_DIR" ]; then
      for x in "$name" "$name.schema"; do
        if [ -f "$BACKUP_DIR/$x" ]; then cp "$BACKUP_DIR/$x" "$BACKUP_COPY_DIR/.$x.partial"; mv "$BACKUP_COPY_DIR/.$x.partial" "$BACKUP_COPY_DIR/$x"; fi
      done
      prune "$BACKUP_COPY_DIR"
    fi
    echo "{\"path\": \"$BACKUP_DIR_SHOWN/$name\", \"size\": $(stat -c %s "$f"), \"table_data\": $data}"
  EOT
}

job "mlflow-backup" {
  type        = "batch"
  region      = var.region
  datacenters = var.datacenters

  periodic {
    crons            = [var.schedule]
    prohibit_overlap = true
    time_zone        = var.time_zone
  }

  group "backup" {
    count = 1

    volume "mlflow-backend-store" {
      type      = "host"
      source    = "mlflow-backend-store"
      read_only = false
    }

    volume "mlflow-backups" {
      type      = "host"
      source    = "mlflow-backups"
      read_only = false
    }

    dynamic "volume" {
      for_each = var.copy ? ["mlflow-backups-copy"] : []
      labels   = [volume.value]
      content {
        type      = "host"
        source    = volume.value
        read_only = false
      }
    }

    # A failed backup stays failed (the next night tries again); doctor's `nightly backup` row says so.
    restart {
      attempts = 0
      mode     = "fail"
    }

    reschedule {
      attempts  = 0
      unlimited = false
    }

    task "backup" {
      driver = "docker"
      user   = var.user

      constraint {
        attribute = "${attr.cpu.arch}"
        operator  = "set_contains_any"
        value     = var.arch
      }

      config {
        image      = var.store == "postgres" ? var.pg_dump_image : var.image
        entrypoint = var.store == "postgres" ? ["/bin/bash", "-c", local.pg_script] : ["python3", "/usr/local/bin/mlflow-backup.py"]
      }

      volume_mount {
        volume      = "mlflow-backend-store"
        destination = "/mnt/backend_store"
        read_only   = false
      }

      volume_mount {
        volume      = "mlflow-backups"
        destination = "/mnt/backups"
        read_only   = false
      }

      dynamic "volume_mount" {
        for_each = var.copy ? ["mlflow-backups-copy"] : []
        content {
          volume      = volume_mount.value
          destination = "/mnt/backups-copy"
          read_only   = false
        }
      }

      # store = postgres: the database from this job's own Variable (a launch reads its parent's), never in its text.
      dynamic "template" {
        for_each = var.store == "postgres" ? ["nomad/jobs/${var.job_name}-backup"] : []
        content {
          data        = "{{ with nomadVar \"${template.value}\" }}PGURL={{ .database_url }}\nPGPASSWORD_HEX={{ .password_hex }}{{ end }}\n"
          destination = "secrets/database.env"
          env         = true
          change_mode = "noop"
        }
      }

      env {
        BACKUP_STORE     = var.store
        BACKUP_DB        = "/mnt/backend_store/mlflow.db"
        BACKUP_DIR       = "/mnt/backups"
        BACKUP_DIR_SHOWN = var.backups_path
        BACKUP_COPY_DIR  = var.copy ? "/mnt/backups-copy" : ""
        BACKUP_KEEP      = "${var.keep}"
        BACKUP_VERSION   = regex_replace(var.image, "^.*:v", "")
      }

      resources {
        cpu    = 100
        memory = 256
      }
    }
  }
}
