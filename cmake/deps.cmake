# Third-party dependencies, all from Debian packages (scripts/setup.sh installs them).
find_package(absl CONFIG REQUIRED)
find_package(nlohmann_json 3 CONFIG REQUIRED)
find_package(Threads REQUIRED)
find_package(OpenMP REQUIRED COMPONENTS CXX)

set(BLA_VENDOR OpenBLAS)
find_package(BLAS REQUIRED)
find_path(MOE_CBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES openblas-pthread openblas REQUIRED)
add_library(moe_openblas INTERFACE)
target_link_libraries(moe_openblas INTERFACE ${BLAS_LIBRARIES})
target_include_directories(moe_openblas INTERFACE ${MOE_CBLAS_INCLUDE_DIR})

if(MOE_BUILD_SERVER)
  find_package(Protobuf REQUIRED)
  find_package(gRPC CONFIG REQUIRED)
  find_package(prometheus-cpp CONFIG REQUIRED)
  find_program(MOE_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)
  # Python stubs for the Python integration tests and examples (optional at build time).
  find_program(MOE_GRPC_PYTHON_PLUGIN grpc_python_plugin)
else()
  # Without the server, the generation scheduler and the metrics it reports to (no gRPC in
  # either) still build where prometheus-cpp is found: moe-generation-bench needs them, on GPU
  # machines that have the compute core's libraries and prometheus-cpp but no gRPC.
  find_package(prometheus-cpp CONFIG QUIET)
endif()
set(MOE_BUILD_SCHEDULER ${prometheus-cpp_FOUND})

if(MOE_BUILD_TESTS)
  find_package(GTest CONFIG REQUIRED)
endif()
