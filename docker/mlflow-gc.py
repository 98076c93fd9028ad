"""`mlflow gc --older-than X`, then a check that what it was to remove is gone from the artifacts volume.

Run by the periodic job nomad/mlflow-gc.nomad.hcl (setting gc_older_than):
    python /usr/local/bin/mlflow-gc.py --older-than 30d --artifacts-destination /mnt/artifacts
with the store's URL in MLFLOW_BACKEND_STORE_URI (never on a command line: a PostgreSQL URL holds a password).

1. Before gc, from the store: what gc removes (mlflow/cli's _gc_tracking_resources selects the same): the runs
   deleted more than X ago, the deleted runs of the experiments deleted more than X ago, the logged models deleted
   more than X ago; each with its artifact folder on the volume.
2. MLflow's own gc command (mlflow.cli's `gc`, in this process), with the server's artifact URIs resolved as the
   server resolves them: a run logged through the server has an ``mlflow-artifacts:/<experiment>/<run>/artifacts``
   URI, which plain `mlflow gc` can delete only through a running server's HTTP API (MLFLOW_TRACKING_URI and, with
   auth, a user's credentials; mlflow/mlflow#7558, #13188) and otherwise fails on; here it is the folder
   ``<artifacts destination>/<experiment>/<run>/artifacts``, removed as the server would remove it.
3. The check: every folder of step 1 must be gone (or hold no file), and the runs gone from the store. What is
   left is said, one line each (where, how many files, how many bytes), and the exit code is then 1 (Nomad marks
   the launch failed: doctor's `gc` row reads it). gc's own failure (a folder it cannot remove, mlflow/mlflow#3595,
   #19467) is said too, and what it left is checked all the same.

Output: ``mlflow-gc: ...`` lines, MLflow's own, and last one JSON line (doctor reads it):
``{"older_than": "30d", "runs": 2, "removed": 2, "models": 0, "experiments": 0, "left": [...], "error": ""}``.
"""
import argparse
import json
import os
import sys
import urllib.parse

SERVED = "mlflow-artifacts"  # the scheme of artifacts logged through the server (--serve-artifacts)
HTTP_ANCHOR = "/api/2.0/mlflow-artifacts/artifacts/"  # an http(s) URI of the same (mlflow/server/handlers.py)


def say(text):
    print(f"mlflow-gc: {text}", flush=True)


def local_path(uri, destination):
    """The folder an artifact URI names on this machine (None: not on this machine, e.g. s3://)."""
    parsed = urllib.parse.urlparse(uri or "")
    if parsed.scheme == SERVED:
        return os.path.join(destination, parsed.path.lstrip("/"))
    if parsed.scheme in ("http", "https") and HTTP_ANCHOR in parsed.path:
        return os.path.join(destination, parsed.path.split(HTTP_ANCHOR, 1)[1].lstrip("/"))
    if parsed.scheme == "file":
        return urllib.parse.unquote(parsed.path)
    if parsed.scheme == "" and uri.startswith("/"):
        return uri
    return None


def resolve_served_artifacts_locally(destination):
    """mlflow-artifacts:/ URIs become the folders under ``destination`` (MLflow's local repository deletes them)."""
    from mlflow.store.artifact.artifact_repository_registry import _artifact_repository_registry
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    def served(artifact_uri, tracking_uri=None, registry_uri=None):
        return LocalArtifactRepository(local_path(artifact_uri, destination), tracking_uri=tracking_uri,
                                       registry_uri=registry_uri)

    _artifact_repository_registry.register(SERVED, served)


def milliseconds(older_than):
    """MLflow's #d#h#m#s (mlflow/cli gc's own parsing) in milliseconds."""
    import re
    from datetime import timedelta

    parts = re.fullmatch(r"((?P<days>[.\d]+?)d)?((?P<hours>[.\d]+?)h)?((?P<minutes>[.\d]+?)m)?((?P<seconds>[.\d]+?)s)?",
                         older_than)
    if not older_than or parts is None:
        raise SystemExit(f"mlflow-gc: --older-than {older_than!r} is not #d#h#m#s (like 30d or 12h)")
    return int(timedelta(**{k: float(v) for k, v in parts.groupdict().items() if v}).total_seconds() * 1000)


def targets(store, older_than_ms, destination):
    """What gc removes: [(kind, id, where it says it is, its folder here)] and the run IDs."""
    from mlflow.entities import ViewType
    from mlflow.utils.time import get_current_time_millis

    found = []
    run_ids = list(store._get_deleted_runs(older_than=older_than_ms))
    threshold = get_current_time_millis() - older_than_ms
    experiments, token = [], None
    while True:
        page = store.search_experiments(view_type=ViewType.DELETED_ONLY,
                                        filter_string=f"last_update_time < {threshold}", page_token=token)
        experiments += list(page)
        token = page.token
        if not token:
            break
    if experiments:
        token = None
        while True:
            page = store.search_runs(experiment_ids=[e.experiment_id for e in experiments], filter_string="",
                                     run_view_type=ViewType.DELETED_ONLY, page_token=token)
            run_ids += [run.info.run_id for run in page if run.info.run_id not in run_ids]
            token = page.token
            if not token:
                break
    for run_id in run_ids:
        run = store.get_run(run_id)
        found.append(("run", run_id, f"experiment {run.info.experiment_id}", run.info.artifact_uri))
    if hasattr(store, "_get_deleted_logged_models"):
        for model_id in store._get_deleted_logged_models(older_than=older_than_ms):
            model = store.get_logged_model(model_id, allow_deleted=True)
            found.append(("logged model", model_id, f"experiment {model.experiment_id}", model.artifact_location))
    for experiment in experiments:
        found.append(("experiment", experiment.experiment_id, experiment.name, experiment.artifact_location))
    return [(kind, ident, label, uri, local_path(uri, destination)) for kind, ident, label, uri in found], run_ids


def files_under(path):
    """(files, bytes) under ``path`` (a file or a folder); (0, 0) when it is gone."""
    if os.path.isfile(path):
        return 1, os.path.getsize(path)
    count = size = 0
    for folder, _, names in os.walk(path):
        for name in names:
            count += 1
            try:
                size += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return count, size


def tidy_run_folder(path):
    """``<experiment>/<run>/artifacts`` removed leaves ``<experiment>/<run>`` empty: removed too (never with files)."""
    parent = os.path.dirname(path.rstrip("/"))
    if os.path.basename(path.rstrip("/")) == "artifacts" and os.path.isdir(parent):
        try:
            os.rmdir(parent)
        except OSError:
            pass


def human(size):
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000


def run_gc(older_than, uri, destination):
    """MLflow's gc command, in this process; '' or the one line it failed with."""
    from mlflow.cli import cli

    args = ["gc", "--older-than", older_than, "--backend-store-uri", uri, "--artifacts-destination", destination,
            "--tracking-uri", uri]
    try:
        cli.main(args=args, prog_name="mlflow", standalone_mode=False)
    except SystemExit as exc:
        return "" if not exc.code else f"exit {exc.code}"
    except Exception as exc:  # noqa: BLE001 - said in one line, then checked like a success
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[0] if text else ''}"[:400]
    return ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--older-than", required=True)
    parser.add_argument("--artifacts-destination", default=os.environ.get("MLFLOW_ARTIFACTS_DESTINATION",
                                                                          "/mnt/artifacts"))
    parser.add_argument("--shown-as", default="", help="the artifacts folder as the host names it (output only)")
    options = parser.parse_args()
    uri = os.environ.get("MLFLOW_BACKEND_STORE_URI", "").strip()
    if not uri or uri.startswith("from-the-template:"):
        say("MLFLOW_BACKEND_STORE_URI is empty or was not rendered (store postgres: the job's Variable "
            "nomad/jobs/<job>-gc lacks its item database_url; inv deploy writes it)")
        print(json.dumps({"older_than": options.older_than, "error": "no store URL"}), flush=True)
        return 78
    destination = options.artifacts_destination.rstrip("/") or "/"
    shown = options.shown_as or destination
    os.environ["MLFLOW_TRACKING_URI"] = uri  # gc refuses to run without one; the served artifacts are local here
    older_ms = milliseconds(options.older_than)

    from mlflow.tracking import _get_store

    resolve_served_artifacts_locally(destination)
    store = _get_store(uri, destination)
    listed, run_ids = targets(store, older_ms, destination)
    runs = sum(1 for t in listed if t[0] == "run")
    models = sum(1 for t in listed if t[0] == "logged model")
    experiments = sum(1 for t in listed if t[0] == "experiment")
    say(f"{runs} run{'s' if runs != 1 else ''}, {models} logged model{'s' if models != 1 else ''} and "
        f"{experiments} experiment{'s' if experiments != 1 else ''} deleted more than {options.older_than} ago"
        + (": " + ", ".join(t[1] for t in listed if t[0] == "run") if runs else ""))
    error = run_gc(options.older_than, uri, destination) if listed else ""
    if error:
        say(f"mlflow gc failed: {error}")

    left = []
    for kind, ident, label, artifact_uri, path in listed:
        if path is None:
            continue  # not on this machine (s3://...): not ours to check
        if kind == "run":
            tidy_run_folder(path)
        count, size = files_under(path)
        if count:
            shown_path = shown + path[len(destination):] if path.startswith(destination + "/") else path
            left.append({"kind": kind, "id": ident, "where": label, "uri": artifact_uri, "path": shown_path,
                         "files": count, "bytes": size})
            say(f"left: {kind} {ident} ({label}): {shown_path}, {count} file{'s' if count != 1 else ''}, "
                f"{human(size)}")
    still = []
    if run_ids:
        from mlflow.exceptions import MlflowException

        for run_id in run_ids:
            try:
                store.get_run(run_id)
                still.append(run_id)
            except MlflowException:
                pass
    if still:
        say(f"left in the store: {len(still)} of the {runs} run{'s' if runs != 1 else ''} ({', '.join(still)})")
    removed = runs - len(still)
    if left or still or error:
        total = sum(item["bytes"] for item in left)
        say(f"removed {removed} of {runs} run{'s' if runs != 1 else ''}; left: {len(left)} folder"
            f"{'s' if len(left) != 1 else ''} ({human(total)}) in {shown}" + (f"; gc failed: {error}" if error else ""))
    else:
        say(f"removed {runs} run{'s' if runs != 1 else ''}, {models} logged model{'s' if models != 1 else ''}, "
            f"{experiments} experiment{'s' if experiments != 1 else ''}; nothing left in {shown}")
    print(json.dumps({"older_than": options.older_than, "runs": runs, "removed": removed, "models": models,
                      "experiments": experiments, "left": left, "still_in_store": still, "error": error}), flush=True)
    return 1 if left or still or error else 0


if __name__ == "__main__":
    sys.exit(main())
