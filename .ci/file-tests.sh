# The tests that make file requests, which CI runs again on the thread file driver
# (IOCP_FILE_DRIVER=threads; the default is io_uring). Sourced by .ci/run and
# .ci/sanitizers.sh, so that both rerun the same ones.

# The engine's, as `cargo test -p iocp-engine` arguments.
ENGINE_FILE_TESTS=(--lib --test file --test closing --test exhaustion)
# The C suite's, as names for ffi/tests/sanitize.sh (.ci/run reruns the whole C suite).
C_FILE_TESTS=(aix_example api_table close_in_flight faults files fork fuzz_calls)
