"""Snapshots of each screen at a fixed size, over deterministic data (tests/ui_data.py).

Update after a deliberate change with: pytest tests/test_ui_snapshots.py --snapshot-update
"""

from tests.ui_data import frozen_app

SIZE = (140, 36)


def test_dashboard(snap_compare) -> None:
    assert snap_compare(frozen_app(), terminal_size=SIZE)


def test_dashboard_light_theme_and_filter(snap_compare) -> None:
    assert snap_compare(
        frozen_app(theme="shard-light"), press=["slash", *"act", "enter"], terminal_size=SIZE
    )


def test_detail(snap_compare) -> None:
    # The cursor starts on shard 0; shard 4 is its first child.
    assert snap_compare(frozen_app(), press=["j", "enter"], terminal_size=SIZE)


def test_rewind_dialog(snap_compare) -> None:
    assert snap_compare(frozen_app(), press=["j", "r"], terminal_size=SIZE)


def test_rewind_dialog_to_a_time(snap_compare) -> None:
    async def choose_time(pilot) -> None:
        await pilot.press("j", "r")
        await pilot.pause()
        dialog = pilot.app.screen
        dialog.query_one("#time").value = True
        await pilot.pause()
        dialog.query_one("#time-input").value = "-15m"
        await pilot.pause(0.2)

    assert snap_compare(frozen_app(), run_before=choose_time, terminal_size=SIZE)


def test_records_of_a_failing_shard(snap_compare) -> None:
    # Shard 1 is failing: its records open at the one the processor fails on, decoded.
    assert snap_compare(frozen_app(), press=["j", "j", "j", "enter", "o"], terminal_size=SIZE)


def test_skip_dialog_on_a_failing_shard(snap_compare) -> None:
    assert snap_compare(frozen_app(), press=["j", "j", "j", "s"], terminal_size=SIZE)


def test_help(snap_compare) -> None:
    assert snap_compare(frozen_app(), press=["question_mark"], terminal_size=SIZE)


def test_help_read_only(snap_compare) -> None:
    assert snap_compare(frozen_app(read_only=True), press=["question_mark"], terminal_size=SIZE)


def test_dashboard_in_fleet_mode(snap_compare) -> None:
    """An owner column: this worker, the others, and a lease nobody renews marked."""
    assert snap_compare(frozen_app(fleet=True), terminal_size=SIZE)


def test_workers(snap_compare) -> None:
    assert snap_compare(frozen_app(fleet=True), press=["w"], terminal_size=SIZE)


def test_dashboard_attached_to_a_kcl_application(snap_compare) -> None:
    """Owners from the lease table, an expired lease marked, and the findings on top."""
    assert snap_compare(frozen_app(attach=True), terminal_size=SIZE)


def test_workers_of_a_kcl_application(snap_compare) -> None:
    assert snap_compare(frozen_app(attach=True), press=["w"], terminal_size=SIZE)


def test_rewind_dialog_attached_asks_for_the_stream_name(snap_compare) -> None:
    assert snap_compare(frozen_app(attach=True), press=["j", "r"], terminal_size=SIZE)
