"""`unipgen bench hardening`: what each file of the adversarial upload corpus costs the service.

For every case of `unipgen.bench.upload_corpus` (pixel and audio bombs, extreme dimensions,
truncated, corrupt and disguised files, oversized JSON bodies; `quick` leaves out the 50 MB and
100 MB bodies), sent to a live service with its default settings:

- time to refusal (the request's wall time on loopback, the upload included);
- the peak RSS increase of the service process and of its encoder process over their RSS at
  rest (after a warm-up that loaded every model): the kernel's high-water mark (`VmHWM`), reset
  before each request through `/proc/PID/clear_refs`, so a peak between two samples is not missed;
- whether the service still answers, for this tenant and for another.

Targets (issue 14): no request raises the service's RSS by more than 200 MB, none takes more
than 2 s to be refused, the service survives every one. The service runs in its own process
(this module with `--serve HOME`), so that the client's own memory is not counted.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from unipgen.bench import live_service, upload_corpus

ADMIN_KEY = "bench-admin-key"
MAX_RSS_INCREASE_MB = 200
MAX_REFUSAL_S = 2.0


def run(quick: bool = False) -> dict[str, Any]:
    """Every case of the corpus against a fresh service; `quick` leaves out the 50 and 100 MB bodies."""
    from unipgen.eval.environment import machine
    from unipgen.settings import Settings

    settings = Settings()
    home = Path(tempfile.mkdtemp(prefix="unipgen-hardening-bench-"))
    results: dict[str, Any] = {"machine": machine("PIL", "soundfile", "fastapi", "uvicorn"), "quick": quick}
    started = time.perf_counter()
    print("[0] corpus and service...", file=sys.stderr, flush=True)
    cases = upload_corpus.corpus(settings, issue_sizes=not quick)
    service = live_service.ServiceProcess(__name__, home)
    try:
        bench = _Bench(service)
        results["rest_mb"] = bench.warm_up()
        results["settings"] = {name: getattr(settings, name) for name in (
            "max_blob_bytes", "max_request_bytes", "max_bulk_request_bytes", "max_document_chars",
            "max_image_pixels", "max_image_side", "max_image_aspect", "encoder_image_side",
            "max_audio_decoded_bytes", "max_audio_seconds", "encoder_workers", "encoder_timeout_s")}
        rows = []
        for number, case in enumerate(cases, 1):
            print(f"[{number}/{len(cases)}] {case.name}", file=sys.stderr, flush=True)
            rows.append(bench.measure(case))
        results["cases"] = rows
        bench.close()
    finally:
        service.stop()
        shutil.rmtree(home, ignore_errors=True)
    results |= _summary(results["cases"])
    results["total_s"] = round(time.perf_counter() - started, 1)
    return results


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    refused = [r for r in rows if r["status"] >= 400]
    worst_rss = max(max(r["service_rss_increase_mb"], r["encoder_rss_increase_mb"]) for r in rows)
    return {
        "refusals": len(refused),
        "accepted": len(rows) - len(refused),
        "all_as_expected": all(r["as_expected"] for r in rows),
        "survived_all": all(r["alive"] for r in rows),
        "max_refusal_s": max(r["seconds"] for r in refused),
        "max_service_rss_increase_mb": max(r["service_rss_increase_mb"] for r in rows),
        "max_encoder_rss_increase_mb": max(r["encoder_rss_increase_mb"] for r in rows),
        "targets_met": (worst_rss <= MAX_RSS_INCREASE_MB and max(r["seconds"] for r in refused) <= MAX_REFUSAL_S
                        and all(r["alive"] for r in rows)),
    }


# -- memory of a process, from /proc ------------------------------------------------------------------


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def rss_mb(pid: int | None) -> float:
    return _status_kb(pid, "VmRSS") / 1024 if pid else 0.0


def peak_mb(pid: int | None) -> float:
    return _status_kb(pid, "VmHWM") / 1024 if pid else 0.0


def reset_peak(pid: int | None) -> None:
    """Set the process's high-water mark back to its current RSS (Linux `clear_refs` 5)."""
    if pid:
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(child) for child in text]
    return found


# -- the service process ---------------------------------------------------------------------------------


def _serve(home: Path) -> None:
    """The service (`python -m unipgen.bench.hardening --serve HOME`): default settings but the rate limit."""
    from unipgen.settings import Settings

    live_service.serve(Settings(home=home / "store", admin_key=ADMIN_KEY, rate_limit_per_minute=10_000_000),
                       home / "port")


class _Bench:
    """Tenants `acme` (the corpus's target) and `other` (a bystander), warmed up; one case at a time."""

    def __init__(self, service: live_service.ServiceProcess) -> None:
        import httpx

        self.service = service
        with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
            keys = []
            for tenant in ("acme", "other"):
                admin.post("/v1/tenants", json={"key": tenant}).raise_for_status()
                keys.append(admin.post(f"/v1/tenants/{tenant}/api-keys", json={"name": "bench"}).json()["key"])
        self.http = httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {keys[0]}"}, timeout=600)
        self.other = httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {keys[1]}"}, timeout=60)
        self.http.post("/v1/users", json={"key": "target"}).raise_for_status()
        self.other.post("/v1/users", json={"key": "bystander"}).raise_for_status()

    def warm_up(self) -> dict[str, float]:
        """Load every encoder (one real face, voice and subject), then the RSS at rest (MB)."""
        face = ("face.pgm", upload_corpus.FACE.read_bytes(), "image/x-portable-anymap")
        voice = ("v.flac", upload_corpus.VOICE.read_bytes(), "audio/flac")
        dog = ("dog.jpg", upload_corpus.DOG.read_bytes(), "image/jpeg")
        for route, form, files in (
                ("faces", {"key": "warm", "consent": "true"}, {"file": face}),
                ("voices", {"key": "warm", "consent": "true"}, {"file": voice}),
                ("subjects", {"key": "warm", "name": "Rex", "class_noun": "dog"}, {"files": dog})):
            self.http.post(f"/v1/users/target/{route}", data=form, files=files).raise_for_status()
        time.sleep(1.0)
        return {"service": round(rss_mb(self.service.process.pid), 1), "encoder": round(rss_mb(self._encoder()), 1)}

    def _encoder(self) -> int | None:
        """The encoder process: the service's largest child (the others: multiprocessing's helpers)."""
        found = children(self.service.process.pid)
        return max(found, key=rss_mb) if found else None

    def measure(self, case: upload_corpus.Case) -> dict[str, Any]:
        server, encoder = self.service.process.pid, self._encoder()
        rest = {"service": rss_mb(server), "encoder": rss_mb(encoder)}
        reset_peak(server)
        reset_peak(encoder)
        started = time.perf_counter()
        try:
            response = upload_corpus.send(self.http, "target", case)
            status, body = response.status_code, _json(response)
        except Exception as exc:  # noqa: BLE001  (a reset connection is a result here)
            status, body = 0, {"code": type(exc).__name__, "message": str(exc)}
        seconds = time.perf_counter() - started
        increase = {"service": peak_mb(server) - rest["service"], "encoder": peak_mb(encoder) - rest["encoder"]}
        alive = self.service.alive and self._answers()
        return {"name": case.name, "about": case.about, "bytes": case.size, "status": status,
                "code": body.get("code"), "message": str(body.get("message", ""))[:160],
                "as_expected": status in case.expect and (case.code is None or body.get("code") == case.code),
                "seconds": round(seconds, 3), "service_rss_increase_mb": round(max(0.0, increase["service"]), 1),
                "encoder_rss_increase_mb": round(max(0.0, increase["encoder"]), 1), "alive": alive}

    def _answers(self) -> bool:
        try:
            return (self.http.get("/v1/health").status_code == 200
                    and self.other.get("/v1/users").json() == ["bystander"])
        except Exception:  # noqa: BLE001
            return False

    def close(self) -> None:
        self.http.close()
        self.other.close()


def _json(response: Any) -> dict[str, Any]:
    try:
        found = response.json()
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


if __name__ == "__main__":  # the service process: `python -m unipgen.bench.hardening --serve HOME`
    _serve(Path(sys.argv[sys.argv.index("--serve") + 1]))
