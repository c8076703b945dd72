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


async def test_credentials_never_reach_the_logs(kinesalite: str, tmp_path) -> None:
    name = unique()
    await Kinesis(kinesalite).create(name, 1)
    await Kinesis(kinesalite).put(name, numbered(5))
    env = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN}
    for args in (
        [
            "run",
            name,
            "--endpoint-url",
            kinesalite,
            "--db",
            str(tmp_path / "c.db"),
            "--max-records",
            "5",
            "--log-format",
            "json",
            "--inject-faults",
            "throttle=0.3,seed=1",
        ],
        ["run", "missing-stream", "--endpoint-url", kinesalite, "--db", str(tmp_path / "d.db")],
    ):
        result = run_cli(*args, env=env)
        assert result.returncode in (0, 2), result.stderr
        for secret in (SECRET, KEY_ID, TOKEN):
            assert secret not in result.stderr and secret not in result.stdout


def test_help_is_fast_and_imports_no_aws_code() -> None:
    code = (
        "import sys, console.cli\n"
        "console.cli.build_parser().format_help()\n"
        "heavy = ('aioboto3', 'botocore', 'aiosqlite', 'aiohttp')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
