"""Every conditional write of the lease protocols broken on purpose, one at a time, and the
tests that catch it named: the proof that each condition is guarded by a test that can fail.

Run by hand (about fifteen minutes on two cores; moto's server is started by the tests):

    .venv/bin/python -m tests.break_conditions            # every break
    .venv/bin/python -m tests.break_conditions renew      # those whose name has "renew"

Each break widens one condition so it always holds, while still naming every value the
write sends (DynamoDB refuses a request with an unused value). A break no test catches is
printed as SURVIVED and the exit code is 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = "console/checkpoints/leases/table.py"
HANDOFFS = "console/checkpoints/leases/handoffs.py"
COORDINATOR = "console/checkpoints/leases/coordinator.py"
ANY = " OR attribute_exists(leaseKey)"
ANY_K = " OR attribute_exists(#k) OR attribute_not_exists(#k)"

# name -> (file, exact text, its replacement)
BREAKS: dict[str, tuple[str, str, str]] = {
    "renew: counter": (
        TABLE,
        'ConditionExpression=f"leaseCounter = :c AND {condition}",',
        'ConditionExpression=f"(leaseCounter = :c OR attribute_exists(leaseKey)) AND {condition}",',
    ),
    "renew: holding": (
        TABLE,
        'ConditionExpression=f"leaseCounter = :c AND {condition}",',
        'ConditionExpression=f"leaseCounter = :c AND ({condition}{ANY})",',
    ),
    "take: counter": (
        TABLE,
        'ConditionExpression="leaseCounter = :c",',
        f'ConditionExpression="leaseCounter = :c{ANY}",',
    ),
    "release: counter and owner": (
        TABLE,
        'ConditionExpression="leaseCounter = :c AND leaseOwner = :me "',
        'ConditionExpression="(leaseCounter = :c AND leaseOwner = :me) "\n'
        '            "OR attribute_exists(leaseKey) "',
    ),
    "release: no handoff under way": (
        TABLE,
        '"AND attribute_not_exists(checkpointOwner)",\n            ExpressionAttributeValues={\n'
        '                ":c"',
        '"AND (attribute_not_exists(checkpointOwner) OR attribute_exists(leaseKey))",\n'
        '            ExpressionAttributeValues={\n                ":c"',
    ),
    "nudge: the owner seen, no handoff under way": (
        HANDOFFS,
        'ConditionExpression="leaseOwner = :owner AND attribute_not_exists(checkpointOwner)",',
        'ConditionExpression="(leaseOwner = :owner AND attribute_not_exists(checkpointOwner))'
        f'{ANY}",',
    ),
    "checkpoint: counter": (
        TABLE,
        'condition=f"leaseCounter = :c AND {condition}",',
        'condition=f"(leaseCounter = :c OR attribute_exists(leaseKey)) AND {condition}",',
    ),
    "checkpoint: holding": (
        TABLE,
        'condition=f"leaseCounter = :c AND {condition}",',
        'condition=f"leaseCounter = :c AND ({condition}{ANY})",',
    ),
    "fence: counter": (
        TABLE,
        'condition="leaseCounter = :c AND "',
        'condition="(leaseCounter = :c OR attribute_exists(leaseKey)) AND "',
    ),
    "fence: no handoff under way": (
        TABLE,
        'else "attribute_not_exists(checkpointOwner)"),',
        'else "(attribute_not_exists(checkpointOwner) OR attribute_exists(leaseKey))"),',
    ),
    "fence, forced: the handoff seen": (
        TABLE,
        '+ ("checkpointOwner = :from" if handing',
        '+ ("(checkpointOwner = :from OR attribute_exists(leaseKey))" if handing',
    ),
    "create: only if absent": (
        TABLE,
        'ConditionExpression="attribute_not_exists(leaseKey)",',
        f'ConditionExpression="attribute_not_exists(leaseKey){ANY}",',
    ),
    "set_children: only if present": (
        TABLE,
        'ConditionExpression="attribute_exists(leaseKey)",',
        'ConditionExpression="attribute_exists(leaseKey) OR attribute_not_exists(leaseKey)",',
    ),
    "hand_off: holder as seen": (
        HANDOFFS,
        'ConditionExpression="leaseOwner = :from AND attribute_not_exists(checkpointOwner)",',
        'ConditionExpression="(leaseOwner = :from OR attribute_exists(leaseKey)) '
        'AND attribute_not_exists(checkpointOwner)",',
    ),
    "hand_off: no handoff under way": (
        HANDOFFS,
        'ConditionExpression="leaseOwner = :from AND attribute_not_exists(checkpointOwner)",',
        'ConditionExpression="leaseOwner = :from AND (attribute_not_exists(checkpointOwner)'
        f'{ANY})",',
    ),
    "assign: counter": (
        HANDOFFS,
        'conditions = ["leaseCounter = :c"]',
        f'conditions = ["(leaseCounter = :c{ANY})"]',
    ),
    "assign: owners as seen": (
        HANDOFFS,
        'conditions.append(f"{name} = {label}")',
        'conditions.append(f"({name} = {label} OR attribute_exists(leaseKey))")',
    ),
    "assign: no owner where none was seen": (
        HANDOFFS,
        'conditions.append(f"attribute_not_exists({name})")',
        'conditions.append("attribute_exists(leaseKey)")',
    ),
    "decline: by the worker it goes to": (
        HANDOFFS,
        'ConditionExpression="leaseOwner = :me AND checkpointOwner = :from",',
        'ConditionExpression="(leaseOwner = :me OR attribute_exists(leaseKey)) '
        'AND checkpointOwner = :from",',
    ),
    "decline: the holder as seen": (
        HANDOFFS,
        'ConditionExpression="leaseOwner = :me AND checkpointOwner = :from",',
        f'ConditionExpression="leaseOwner = :me AND (checkpointOwner = :from{ANY})",',
    ),
    "migration: first write": (
        COORDINATOR,
        'condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(#k)"}',
        f'condition: dict[str, Any] = {{"ConditionExpression": "attribute_not_exists(#k){ANY_K}"}}',
    ),
    "migration: from the version seen": (
        COORDINATOR,
        '"ConditionExpression": "cv = :seen",',
        '"ConditionExpression": "cv = :seen OR attribute_exists(cv) OR attribute_not_exists(cv)",',
    ),
    "leader lock: taken when nobody holds it": (
        COORDINATOR,
        '"ConditionExpression": "attribute_not_exists(#k)",\n',
        f'"ConditionExpression": "attribute_not_exists(#k){ANY_K}",\n',
    ),
    "leader lock: taken over at the version seen": (
        COORDINATOR,
        '"ConditionExpression": "attribute_exists(#k) AND recordVersionNumber = :rvn",',
        f'"ConditionExpression": "(attribute_exists(#k) AND recordVersionNumber = :rvn){ANY_K}",',
    ),
    "leader lock: renewed by its holder": (
        COORDINATOR,
        'UpdateExpression="SET leaseDuration = :d, recordVersionNumber = :new",\n'
        '            ConditionExpression="attribute_exists(#k) AND recordVersionNumber = :rvn "\n'
        '            "AND ownerName = :me",',
        'UpdateExpression="SET leaseDuration = :d, recordVersionNumber = :new",\n'
        '            ConditionExpression="(attribute_exists(#k) AND recordVersionNumber = :rvn "\n'
        f'            "AND ownerName = :me){ANY_K}",',
    ),
    "leader lock: released by its holder": (
        COORDINATOR,
        '"releasing the leader\'s lock",\n'
        '            Key={"key": {"S": LEADER_KEY}},\n'
        '            ConditionExpression="attribute_exists(#k) AND recordVersionNumber = :rvn "\n'
        '            "AND ownerName = :me",',
        '"releasing the leader\'s lock",\n'
        '            Key={"key": {"S": LEADER_KEY}},\n'
        '            ConditionExpression="(attribute_exists(#k) AND recordVersionNumber = :rvn "\n'
        f'            "AND ownerName = :me){ANY_K}",',
    ),
}

TESTS = [
    "tests/test_lease_writes.py",
    "tests/test_leases.py",
    "tests/test_lease_model.py",
    "tests/test_assignment.py",
]
# Slower, and not needed to catch any of them: tests/test_fleet_engine.py, tests/test_fleet.py.


def failing(env: dict[str, str]) -> list[str]:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:logging", "-p",
         "no:cacheprovider", *TESTS],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    return sorted(
        {line.split()[1].split(" - ")[0] for line in run.stdout.splitlines()
         if line.startswith("FAILED ")}
    )  # fmt: skip


def main(argv: list[str]) -> int:
    wanted = [name for name in BREAKS if not argv or any(a in name for a in argv)]
    env = {**os.environ, "HYPOTHESIS_PROFILE": "break"}
    unbroken = failing(env)
    if unbroken:  # else a break's "caught" would be these
        print(f"the tests fail with nothing broken: {', '.join(unbroken)}", file=sys.stderr)
        return 2
    survived = []
    for name in wanted:
        path, old, new = BREAKS[name]
        file = ROOT / path
        source = file.read_text()
        assert source.count(old) == 1, f"{name}: the text to break is not in {path} once"
        try:
            file.write_text(source.replace(old, new))
            caught = failing(env)
        finally:
            file.write_text(source)
        print(f"{name}: " + (", ".join(caught) if caught else "SURVIVED"), flush=True)
        if not caught:
            survived.append(name)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
