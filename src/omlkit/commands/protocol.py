"""Protocol commands: ``oml keys``, ``platform``, ``host proxy``, ``prove`` and ``verify-record``.

Each command builds a config and calls one library function; web, database and crypto imports stay
inside the command bodies.
"""

from __future__ import annotations

import json

import typer

from omlkit.commands._app import app
from omlkit.config import config_command
from omlkit.protocol.config import (
    KeyFileConfig,
    KeysNewConfig,
    PlatformConfig,
    ProveConfig,
    ProxyConfig,
    RegisterHostConfig,
    RegisterModelConfig,
    UsageConfig,
    VerifyRecordConfig,
    ViolationsConfig,
    resolve_admin_token,
)

keys_app = typer.Typer(
    help="Create and inspect protocol key pairs (secp256k1, Ethereum addresses).", no_args_is_help=True
)
platform_app = typer.Typer(
    help="The OML platform: ledger, permissions, registration, verification.", no_args_is_help=True
)
host_app = typer.Typer(help="Run a compliant host.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(platform_app, name="platform")
app.add_typer(host_app, name="host")


def _print(obj: object) -> None:
    typer.echo(json.dumps(obj, indent=1))


def keys_new(cfg: KeysNewConfig) -> None:
    """Create a new key pair; prints its address (the private key is only written to the file)."""
    from omlkit.protocol.identity import Identity

    identity = Identity.new()
    identity.save(cfg.out, overwrite=cfg.force)
    typer.echo(identity.address)


def keys_address(cfg: KeyFileConfig) -> None:
    """Print the address of a key file."""
    from omlkit.protocol.identity import Identity

    typer.echo(Identity.load(cfg.key).address)


config_command(keys_app, "new", KeysNewConfig, keys_new)
config_command(keys_app, "address", KeyFileConfig, keys_address, arguments=("key",))


def _serve_platform(cfg: PlatformConfig) -> None:
    from omlkit.protocol.platform_app import serve

    serve(cfg)


def _register_model(cfg: RegisterModelConfig) -> None:
    from omlkit.fingerprints import FingerprintSet
    from omlkit.protocol.client import PlatformClient
    from omlkit.protocol.messages import make_registration

    token = resolve_admin_token(cfg.admin_token)
    fp_set = FingerprintSet.load(cfg.fingerprints)
    if cfg.reveal_out.exists() and not cfg.force:
        from omlkit.errors import ProtocolError

        raise ProtocolError(f"{cfg.reveal_out} already exists (pass --force to overwrite)")
    request, reveal = make_registration(fp_set, cfg.model_id, cfg.match)
    if cfg.manifest is not None:
        request = request.model_copy(update={"copies": _copies(cfg, fp_set)})
    reveal.save(cfg.reveal_out, overwrite=cfg.force)  # before registering: salts must never be lost
    with PlatformClient(cfg.platform, admin_token=token) as client:
        _print(client.register_model(request))


def _copies(cfg: RegisterModelConfig, fp_set):  # noqa: ANN202
    """The manifest's assignment as the platform registers it (ids only), each copy's host from
    ``--copy-host``; refuses a manifest of another fingerprint file and a host mapping that names no copy."""
    from pydantic import ValidationError

    from omlkit.errors import ConfigError
    from omlkit.protocol.messages import CopyEntry, CopyRegistration
    from omlkit.tracing.manifest import Manifest

    manifest = Manifest.load(cfg.manifest)
    if manifest.fingerprints_sha256 != fp_set.content_hash():
        raise ConfigError(f"--manifest {cfg.manifest} was made for another fingerprint file")
    hosts = dict(item.split("=", 1) for item in cfg.copy_host if "=" in item)
    unknown = set(hosts) - {h.host for h in manifest.hosts}
    if len(hosts) != len(cfg.copy_host) or unknown:
        raise ConfigError(f"--copy-host takes NAME=0xADDRESS with a copy name of the manifest "
                          f"(got {sorted(unknown) or cfg.copy_host})")
    try:
        return CopyRegistration(rate=manifest.rate, pool=manifest.pool, copies=[
            CopyEntry(name=h.host, host=hosts.get(h.host), fingerprint_ids=h.ids) for h in manifest.hosts])
    except ValidationError as exc:
        raise ConfigError(f"--manifest/--copy-host: {exc.errors()[0]['msg']}") from None


def _register_host(cfg: RegisterHostConfig) -> None:
    from omlkit.errors import ConfigError
    from omlkit.protocol.client import PlatformClient
    from omlkit.protocol.identity import Identity
    from omlkit.protocol.messages import RegisterHost

    if (cfg.address is None) == (cfg.key is None):
        raise ConfigError("register-host: give exactly one of --address or --key")
    address = cfg.address or Identity.load(cfg.key).address
    with PlatformClient(cfg.platform, admin_token=resolve_admin_token(cfg.admin_token)) as client:
        _print(client.register_host(RegisterHost(
            address=address, name=cfg.name, endpoint=cfg.endpoint, served_model=cfg.served_model
        )))


config_command(platform_app, "serve", PlatformConfig, _serve_platform)
config_command(platform_app, "register-model", RegisterModelConfig, _register_model)
config_command(platform_app, "register-host", RegisterHostConfig, _register_host)


def platform_violations(cfg: ViolationsConfig) -> None:
    """Print the platform's signed violation records as JSON."""
    from omlkit.protocol.client import PlatformClient

    with PlatformClient(cfg.platform) as client:
        _print(client.violations(cfg.host))


def platform_usage(cfg: UsageConfig) -> None:
    """Print permission counts per host and model."""
    from omlkit.protocol.client import PlatformClient

    with PlatformClient(cfg.platform) as client:
        _print(client.usage(cfg.host, cfg.model_id))


config_command(platform_app, "violations", ViolationsConfig, platform_violations)
config_command(platform_app, "usage", UsageConfig, platform_usage)


def _proxy(cfg: ProxyConfig) -> None:
    from omlkit.protocol.host_proxy import serve

    serve(cfg)


config_command(host_app, "proxy", ProxyConfig, _proxy)


def _prove(cfg: ProveConfig) -> None:
    from omlkit.errors import ProtocolError
    from omlkit.io import atomic_write_json
    from omlkit.protocol.prover import prove

    if cfg.out is not None and cfg.out.exists() and not cfg.force:
        raise ProtocolError(f"{cfg.out} already exists (pass --force to overwrite)")
    if cfg.endpoint is not None:
        typer.echo("note: --endpoint is not used; the platform asks the host's registered endpoint", err=True)
    report = prove(cfg)
    data = report.model_dump(mode="json")
    if cfg.out is not None:
        atomic_write_json(cfg.out, data)
    typer.echo(
        f"{report.outcome}: {report.checked} keys, {report.permitted} permitted, "
        f"{report.unpermitted_matched} unpermitted matched, p={report.p_value:.3g}"
        + (f", violation {report.violation.id}" if report.violation else "")
        + "".join(f", traced to copy {c.name!r} (p={c.p_value:.3g})"
                  for c in (report.violation.traced or [] if report.violation else []))
    )


config_command(app, "prove", ProveConfig, _prove)


def verify_record(cfg: VerifyRecordConfig) -> None:
    """Check a violation record offline with only the platform's address; exit 2 when it does not hold."""
    from omlkit.errors import ProtocolError
    from omlkit.protocol.messages import check_violation_record

    if not cfg.record.is_file():
        raise ProtocolError(f"record file {cfg.record} does not exist")
    checked = check_violation_record(cfg.record.read_text(encoding="utf-8"), cfg.platform_address)
    typer.echo(
        f"valid: violation {checked.id} by host {checked.host} of model {checked.model_id!r} "
        f"({checked.matched}/{checked.checked} keys matched without permission, p={checked.p_value:.3g}), "
        f"signed by platform {checked.platform}"
    )
    for copy in checked.traced or []:
        typer.echo(f"traced to copy {copy.name!r}" + (f" (licensed to host {copy.host})" if copy.host else "")
                   + f": it holds {copy.held} of the {copy.matched} pool keys matched, p={copy.p_value:.3g}"
                   " (corrected over every copy)")
    if checked.traced == []:
        typer.echo("traced: no copy named (too few pool keys matched)")


config_command(app, "verify-record", VerifyRecordConfig, verify_record, arguments=("record",))
