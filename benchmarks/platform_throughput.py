"""Platform throughput and crash safety.

1. Permissions per second with 1, 16 and 200 concurrent hosts: the platform runs as a subprocess
   (``oml platform serve``) on loopback; each host is its own key pair and sends pre-signed permission
   requests one after another (so the client's signing cost is not counted), for a bounded number of
   requests and a bounded time per level.
2. Crash: under load from 16 hosts the platform is killed with SIGKILL, restarted on the same ledger,
   and every permission that was acknowledged (HTTP 200 with a valid σ) must be in the ledger with the
   same σ; replaying an acknowledged request to the restarted platform must be refused.

Prints a table and writes ``benchmarks/out/platform.json``. ``--quick`` runs a small version.

    python benchmarks/platform_throughput.py [--quick] [--db postgresql://...] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform as pyplatform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from omlkit.io import atomic_write_json
from omlkit.protocol.client import PlatformClient
from omlkit.protocol.identity import Identity, verify_signature
from omlkit.protocol.ledger import Ledger, PermissionRow
from omlkit.protocol.messages import PermissionRequest, RegisterHost, RegisterModel
from omlkit.protocol.testing import reset_postgres
from omlkit.server_thread import free_port

ADMIN = "benchmark-admin-token-0123456789"
MODEL = "bench-model"


def start_platform(db: str, key: Path, port: int, log: Path) -> subprocess.Popen:
    """Start ``oml platform serve`` as a subprocess and wait until it answers."""
    cmd = [
        sys.executable,
        "-m",
        "omlkit.cli",
        "platform",
        "serve",
        "--db",
        db,
        "--key",
        str(key),
        "--port",
        str(port),
        "--time-window-s",
        "600",
    ]
    env = {**os.environ, "OMLKIT_ADMIN_TOKEN": ADMIN}
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=log.parent)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"platform exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/platform", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"platform did not start within 60 s; see {log}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def presign(hosts: list[Identity], per_host: int) -> list[list[PermissionRequest]]:
    """``per_host`` signed requests for each host (distinct queries and nonces)."""
    return [
        [PermissionRequest.create(h, MODEL, f"query {i} from {h.address}") for i in range(per_host)]
        for h in hosts
    ]


async def run_load(
    url: str,
    queues: list[list[PermissionRequest]],
    max_seconds: float,
    stop_after: float | None = None,
    acked: list | None = None,
) -> dict:
    """Each queue is one host sending its requests in turn; returns counts, rate and latencies."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=len(queues) + 8, max_keepalive_connections=len(queues) + 8)
    deadline = time.monotonic() + max_seconds
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:

        async def host(queue: list[PermissionRequest]) -> None:
            for req in queue:
                if time.monotonic() > deadline:
                    return
                t0 = time.perf_counter()
                try:
                    resp = await http.post("/v1/permissions", json=req.model_dump(mode="json"))
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    if stop_after is not None:
                        return  # the platform is gone
                    continue
                if resp.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                    if acked is not None:
                        acked.append((req, resp.json()))
                else:
                    errors[str(resp.status_code)] = errors.get(str(resp.status_code), 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(host(q) for q in queues))
        wall = time.perf_counter() - start
    lat = sorted(latencies)
    return {
        "hosts": len(queues),
        "ok": len(lat),
        "errors": errors,
        "seconds": round(wall, 3),
        "permissions_per_s": round(len(lat) / wall, 1) if wall else 0.0,
        "latency_ms_p50": round(1000 * statistics.median(lat), 2) if lat else None,
        "latency_ms_p99": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 2) if lat else None,
    }


async def crash_load(
    url: str, queues: list[list[PermissionRequest]], proc: subprocess.Popen, kill_after_acks: int, acked: list
) -> None:
    """Load the platform and SIGKILL it once ``kill_after_acks`` permissions were acknowledged."""

    async def killer() -> None:
        while len(acked) < kill_after_acks and proc.poll() is None:
            await asyncio.sleep(0.005)
        proc.send_signal(signal.SIGKILL)

    await asyncio.gather(run_load(url, queues, max_seconds=120, stop_after=0, acked=acked), killer())


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code (1 when an acknowledged permission is missing)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small request counts (a smoke run)")
    ap.add_argument("--db", default=None, help="ledger URL/path (default: a fresh SQLite file)")
    ap.add_argument("--levels", default="1,16,200", help="concurrent hosts per level")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "platform.json"))
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    total = 60 if args.quick else 1000  # requests per level
    max_seconds = 20.0 if args.quick else 60.0

    work = Path(tempfile.mkdtemp(prefix="oml-bench-platform-"))
    db = args.db or str(work / "ledger.db")
    if db.startswith("postgresql"):
        reset_postgres(db)
    key, log, port = work / "platform.key", work / "platform.log", free_port()
    Identity.new().save(key)
    url = f"http://127.0.0.1:{port}"
    hosts = [Identity.new() for _ in range(max(levels + [16]))]
    proc = start_platform(db, key, port, log)
    results: dict = {
        "machine": {
            "python": sys.version.split()[0],
            "platform": pyplatform.platform(),
            "cpus": os.cpu_count(),
        },
        "db": "sqlite" if "://" not in db or db.startswith("sqlite") else "postgresql",
        "quick": args.quick,
        "requests_per_level": total,
        "levels": [],
    }
    try:
        with PlatformClient(url, admin_token=ADMIN) as client:
            platform_address = client.address()
            client.register_model(
                RegisterModel(
                    model_id=MODEL,
                    commitments=[{"fingerprint_id": 0, "commitment": "0" * 64, "null_rate": 0.001}],
                )
            )
            for h in hosts:
                client.register_host(RegisterHost(address=h.address))
        print(f"platform {platform_address} ledger {results['db']}; {total} requests per level (pre-signed)")
        print(
            f"{'hosts':>6} {'ok':>6} {'perm/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'srv cpu':>9} {'cli cpu':>9}  errors (cpu: ms per permission)"
        )
        for n in levels:
            queues = presign(hosts[:n], -(-total // n))
            cpu0, client0 = cpu_seconds(proc.pid), time.process_time()
            row = asyncio.run(run_load(url, queues, max_seconds))
            row["platform_cpu_ms_per_permission"] = round(
                1000 * (cpu_seconds(proc.pid) - cpu0) / max(row["ok"], 1), 2
            )
            row["client_cpu_ms_per_permission"] = round(
                1000 * (time.process_time() - client0) / max(row["ok"], 1), 2
            )
            results["levels"].append(row)
            print(
                f"{n:>6} {row['ok']:>6} {row['permissions_per_s']:>8} {row['latency_ms_p50']:>8} "
                f"{row['latency_ms_p99']:>8} {row['platform_cpu_ms_per_permission']:>9} "
                f"{row['client_cpu_ms_per_permission']:>9}  {row['errors'] or '-'}"
            )

        # crash safety: SIGKILL under load, restart, every acknowledged σ must be on the ledger
        acked: list = []
        kill_after = 20 if args.quick else 200
        queues = presign(hosts[:16], -(-(kill_after * 4) // 16))
        asyncio.run(crash_load(url, queues, proc, kill_after, acked))
        proc.wait(timeout=30)
        killed_with = proc.returncode
        proc = start_platform(db, key, port, log)
        ledger = Ledger(db, migrate=False)
        with ledger.read() as session:
            stored = {(r.host, r.nonce): r.signature for r in session.query(PermissionRow)}
        ledger.dispose()
        missing = [
            req.nonce for req, sigma in acked if stored.get((req.host, req.nonce)) != sigma["signature"]
        ]
        valid = all(
            verify_signature(
                {k: v for k, v in s.items() if k != "signature"}, s["signature"], platform_address
            )
            for _, s in acked
        )
        replay = (
            httpx.post(f"{url}/v1/permissions", json=acked[0][0].model_dump(mode="json"), timeout=30)
            if acked
            else None
        )
        crash = {
            "killed_with_signal": -killed_with if killed_with and killed_with < 0 else killed_with,
            "acknowledged": len(acked),
            "acknowledged_sigma_valid": valid,
            "ledger_rows_after_restart": len(stored),
            "acknowledged_missing": len(missing),
            "replay_after_restart_status": replay.status_code if replay is not None else None,
        }
        results["crash"] = crash
        print(
            f"crash: SIGKILL after {len(acked)} acknowledged permissions; after restart the ledger holds "
            f"{len(stored)} rows, {len(missing)} acknowledged missing; replay -> "
            f"{crash['replay_after_restart_status']}"
        )
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    atomic_write_json(args.out, results)
    print(f"wrote {args.out}")
    ok = (
        results["crash"]["acknowledged_missing"] == 0
        and results["crash"]["replay_after_restart_status"] == 409
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
