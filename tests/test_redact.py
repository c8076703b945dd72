"""No secret reaches a log line: recognizable fake credentials, through the real program."""

import subprocess
import sys

from console.redact import MASK, Redactor
from tests.conftest import Kinesis, numbered, run_cli, unique

SECRET = "FAKEsecretKEYdoNOTprint0123456789abcdefXY"
KEY_ID = "AKIAFAKEFAKEFAKE1234"
TOKEN = "FAKEsessionTOKEN/" + "z" * 40


def test_redactor_masks_known_secrets_and_key_shapes() -> None:
    r = Redactor([SECRET, None, "short"])
    text = f"signed with {KEY_ID} and {SECRET}; other ASIAABCDEFGHIJKLMNOP"
    out = r(text)
    assert SECRET not in out and KEY_ID not in out and "ASIAABCDEFGHIJKLMNOP" not in out
    assert out.count(MASK) == 3
    assert r("short words stay") == "short words stay"


def test_the_longest_secret_is_masked_first_and_eight_characters_are_enough() -> None:
    token = "t" * 30
    r = Redactor([token[:8], token])  # a secret that is the start of a longer one
    assert r(f"x {token} y") == f"x {MASK} y"  # whole, not "****" followed by the rest
    r = Redactor(["12345678", "1234567"])
    assert r("a 12345678 b 1234567") == f"a {MASK} b 1234567"
    # An access key id keeps its prefix (AKIA, ASIA: long-term or temporary), nothing more.
    assert Redactor()("AKIAZZZZZZZZZZZZZZZZ") == "AKIA" + MASK


def test_the_environment_s_credentials_are_registered() -> None:
    r = Redactor()
    r.add_environment({"AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN, "HOME": "/r"})
    assert r(f"{SECRET} {TOKEN} /r") == f"{MASK} {MASK} /r"


def echo_credentials(headers: dict[str, str]) -> str:
    """What AWS's signature errors do: quote the request's credential back."""
    return (
        f"The request signature we calculated does not match: {headers.get('Authorization')} "
        f"token {headers.get('X-Amz-Security-Token')}"
    )


def test_credentials_echoed_by_the_service_never_reach_the_output(
    kinesalite: str, tmp_path
) -> None:
    """Two paths where a message carries the access key id and the session token: a refusal
    at start-up (exit 2) and an error retried during a run (a WARNING line, then exit 0). Each
    line shows the credential masked, which proves the path carried it; nothing shows it raw."""
    import asyncio

    from tests.proxy import Reply, proxy

    name = unique()
    asyncio.run(Kinesis(kinesalite).create(name, 1))
    asyncio.run(Kinesis(kinesalite).put(name, numbered(5)))
    env = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN}

    def refuse(operation: str, body: dict, headers: dict[str, str]) -> Reply | None:
        return Reply(400, "ValidationException", echo_credentials(headers))

    failed_once: list[str] = []

    def fail_one_read(operation: str, body: dict, headers: dict[str, str]) -> Reply | None:
        if operation == "GetRecords" and not failed_once:
            failed_once.append(operation)
            return Reply(500, "InternalFailure", echo_credentials(headers))
        return None

    common = ["--db", str(tmp_path / "c.db"), "--no-ui"]
    with proxy(kinesalite, refuse) as p:
        refused = run_cli("run", name, "--endpoint-url", p.url, *common, env=env)
    with proxy(kinesalite, fail_one_read) as p:
        ran = run_cli("run", name, "--endpoint-url", p.url, *common, "--max-records", "5", env=env)
    assert refused.returncode == 2, refused.stderr
    assert ran.returncode == 0, ran.stderr
    assert failed_once == ["GetRecords"]
    for result in (refused, ran):
        echoed = [line for line in result.stderr.splitlines() if "does not match" in line]
        assert len(echoed) == 1, result.stderr
        assert f"Credential={MASK}/" in echoed[0] and f"token {MASK}" in echoed[0], echoed[0]
        for secret in (SECRET, KEY_ID, TOKEN):
            assert secret not in result.stderr and secret not in result.stdout


def test_help_is_fast_and_imports_no_aws_code() -> None:
    code = (
        "import sys, console.cli.commands\n"
        "console.cli.commands.build_parser().format_help()\n"
        "heavy = ('aioboto3', 'botocore', 'aiosqlite', 'aiohttp')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
