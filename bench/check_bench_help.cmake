# Runs `moe-bench --help` (MOE_BENCH) and fails unless it exits 0 and prints every flag with
# its meaning, without absl's build-path headings or empty defaults.
execute_process(COMMAND ${MOE_BENCH} --help
  RESULT_VARIABLE exit_code OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT exit_code EQUAL 0)
  message(FATAL_ERROR "moe-bench --help exited ${exit_code}\nstdout: ${out}\nstderr: ${err}")
endif()
foreach(flag --backend --shapes --hidden --ffn --experts --top_k --tokens --dtype --[no]json
    --repeats --warmup --seed --[no]naive --[no]expert_timing --gemm_ceiling_size --copy_ceiling_mib
    --read_ceiling_mib --flagfile --help)
  string(FIND "${out}" "${flag}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "moe-bench --help does not list ${flag}:\n${out}")
  endif()
endforeach()
foreach(bad "Flags from" "default: ;" "default: )")
  string(FIND "${out}" "${bad}" at)
  if(NOT at EQUAL -1)
    message(FATAL_ERROR "moe-bench --help prints '${bad}':\n${out}")
  endif()
endforeach()
message(STATUS "moe-bench --help ok")
