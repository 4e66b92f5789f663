"""World actions that a bench reads back: the LED and beeper edges since a moment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bodycam.daemon.config import load_config
from bodycam.sim.actions import ActionError, perform
from bodycam.sim.board import SimBoard, build_sim_board


@pytest.fixture
def board(tmp_path: Path) -> Iterator[SimBoard]:
    config = load_config(None).with_overrides(
        device={"state_dir": str(tmp_path / "camera"), "runtime_dir": str(tmp_path / "run")},
        sim={"speed": 50.0},
    )
    sim_board = build_sim_board(config)
    yield sim_board
    sim_board.close()


async def test_output_edges_are_what_the_pins_did_since_the_moment(board: SimBoard) -> None:
    board.red_led.on()
    t0 = (await perform(board, {"do": "outputs"}))["t"]
    board.red_led.off()
    board.beeper.on()
    board.beeper.off()
    board.red_led.on()
    reply = await perform(board, {"do": "output_edges", "since": t0})
    edges = reply["edges"]
    assert [on for _, on in edges["red"]] == [False, True]
    assert [on for _, on in edges["beeper"]] == [True, False]
    assert edges["green"] == []
    times = [t for _, t_list in edges.items() for t, _ in t_list]
    assert all(t0 <= t <= reply["t"] for t in times)


@pytest.mark.parametrize("since", [None, "soon", -1])
async def test_output_edges_wants_a_moment(board: SimBoard, since: object) -> None:
    with pytest.raises(ActionError, match="since"):
        await perform(board, {"do": "output_edges", "since": since})
