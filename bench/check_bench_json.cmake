# Runs moe-bench (MOE_BENCH, arguments MOE_BENCH_ARGS) and fails unless it exits 0 and prints
# one JSON object holding every key that scripts read (and a number under each key of
# MOE_BENCH_NUMBER_KEYS, when given).
execute_process(COMMAND ${MOE_BENCH} ${MOE_BENCH_ARGS}
  RESULT_VARIABLE exit_code OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT exit_code EQUAL 0)
  message(FATAL_ERROR "moe-bench exited ${exit_code}\nstdout: ${out}\nstderr: ${err}")
endif()
string(STRIP "${out}" out)
string(JSON type ERROR_VARIABLE json_error TYPE "${out}")
if(json_error OR NOT type STREQUAL "OBJECT")
  message(FATAL_ERROR "output is not one JSON object (${json_error}):\n${out}")
endif()
foreach(key backend dtype hidden ffn experts top_k tokens median_ms min_ms tflops weight_gbps
    dense_gemm_fraction copy_bw_fraction read_bw_fraction dense_gemm_tflops copy_bw_gbps
    read_bw_gbps naive_median_ms
    speedup_vs_naive active_experts)
  string(JSON value ERROR_VARIABLE key_error GET "${out}" ${key})
  if(key_error)
    message(FATAL_ERROR "JSON output lacks '${key}': ${out}")
  endif()
endforeach()
foreach(key ${MOE_BENCH_NUMBER_KEYS})
  string(JSON type ERROR_VARIABLE key_error TYPE "${out}" ${key})
  if(key_error OR NOT type STREQUAL "NUMBER")
    message(FATAL_ERROR "JSON output has no number under '${key}': ${out}")
  endif()
endforeach()
string(JSON median GET "${out}" median_ms)
string(JSON backend GET "${out}" backend)
if(NOT backend STREQUAL "cpu" OR median LESS_EQUAL 0)
  message(FATAL_ERROR "unexpected backend '${backend}' or median_ms ${median}: ${out}")
endif()
message(STATUS "moe-bench JSON ok: ${out}")
