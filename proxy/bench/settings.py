"""The bench's fixed numbers: sample sizes, pacing, timeouts, and the names it uses."""

from __future__ import annotations

# A relay level alternates direct and proxy batches until each side has streamed this long
# (`--relay-seconds`) and has run at least MIN_RELAY_ROUNDS batches. One batch of 32 streams lasts
# about a second, and one batch's ratio moved between 54 and 132 % on a shared 2-core machine:
# with 2 s a side (four batches) the level's ratio spread over 69-101 % from run to run; 8 s averages
# about ten (and over eight alternated runs the level spread over 87-92 %).
RELAY_SECONDS = 8.0
MIN_RELAY_ROUNDS = 4  # (at 128 streams, 2 let one disturbed batch decide)
WORKERS_RELAY_SECONDS = 2.0  # the same for `serve --workers N` against one process (no target)
TTFT_TOKENS = 8
LONG_TOKENS = 100_000  # cancel, disconnect and memory streams: cut short long before the end
DELTAS_BEFORE_STOP = 3
DISCONNECT_SETTLE = 0.025  # seconds after a disconnect before the simulator's record is asked for
WARMUP = 10
BARE_WARMUP = 5  # requests to the bare relay before its TTFT samples (its model handle, its connection)
MEMORY_TOKENS_PER_SECOND = 20.0  # the simulator's speed while the memory streams are open
STOP_TOKENS_PER_SECOND = 200.0  # the simulator's speed while cancels and disconnects are timed
SATURATION_TOKENS_PER_SECOND = 40.0  # each stream's pace in the saturation phase
SATURATION_CANCEL_SPACING = 0.02  # seconds between the saturation phase's cancels
MEMORY_STREAMS_LMSTUDIO = 4  # a real LM Studio may queue parallel predictions: keep the memory run small
SIMULATED_MODEL = "simulated-llm"
API_KEY = "bench"

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
STEP_TIMEOUT = 60.0  # any one wait: an event to arrive, a request to be answered
PHASE_TIMEOUT = 900.0  # a whole batch of streams

STATIC_PATH = "/v1/model/response/output-modes"  # a small fixed JSON answer, for timing the clients alone
