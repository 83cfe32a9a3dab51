"""The measurements, one module each, run in this order: warm-up, memory, TTFT, relay, stops.

Each phase leaves the proxy idle and the simulator's records empty for the next one.
"""
