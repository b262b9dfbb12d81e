# Runs a benchmark binary (MOE_BENCH, arguments MOE_BENCH_ARGS) and fails unless it exits with
# EXPECTED_EXIT and says why on stderr (matching EXPECTED_MESSAGE when given).
get_filename_component(program "${MOE_BENCH}" NAME)
execute_process(COMMAND ${MOE_BENCH} ${MOE_BENCH_ARGS}
  RESULT_VARIABLE exit_code OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT exit_code STREQUAL "${EXPECTED_EXIT}")
  message(FATAL_ERROR
    "${program} exited '${exit_code}', expected ${EXPECTED_EXIT}\nstdout: ${out}\nstderr: ${err}")
endif()
if(err STREQUAL "")
  message(FATAL_ERROR "${program} exited ${exit_code} without a message on stderr")
endif()
# EXPECTED_MESSAGE (optional): a regular expression the message must match.
if(DEFINED EXPECTED_MESSAGE AND NOT err MATCHES "${EXPECTED_MESSAGE}")
  message(FATAL_ERROR "stderr does not match '${EXPECTED_MESSAGE}': ${err}")
endif()
message(STATUS "${program} exited ${exit_code} as expected: ${err}")
