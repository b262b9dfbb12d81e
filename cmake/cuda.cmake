# Decides whether the CUDA backend is built. AUTO builds it when a usable nvcc is found (given
# by CMAKE_CUDA_COMPILER or $CUDACXX, else on PATH or at /usr/local/cuda) and falls back to a
# CPU-only build, saying why, when there is none; ON requires it. Compiling needs no GPU, so CI
# compiles every CUDA source.
set(MOE_HAVE_CUDA OFF)
set(MOE_MIN_CUDA_VERSION 12.0)  # C++20 in device code and sm_90 need CUDA 12

function(moe_cuda_unavailable reason)
  if(MOE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "MOE_CUDA=ON but ${reason}")
  endif()
  message(STATUS "moe-serve: building without the CUDA backend: ${reason}")
endfunction()

if(NOT MOE_CUDA STREQUAL "OFF")
  set(moe_nvcc "")
  if(CMAKE_CUDA_COMPILER)
    set(moe_nvcc "${CMAKE_CUDA_COMPILER}")
  elseif(DEFINED ENV{CUDACXX})
    set(moe_nvcc "$ENV{CUDACXX}")
  else()
    find_program(MOE_NVCC nvcc PATHS /usr/local/cuda/bin)
    if(MOE_NVCC)
      set(moe_nvcc "${MOE_NVCC}")
    endif()
  endif()

  if(NOT moe_nvcc)
    moe_cuda_unavailable("no nvcc was found (on PATH or at /usr/local/cuda/bin)")
  else()
    execute_process(COMMAND "${moe_nvcc}" --version OUTPUT_VARIABLE moe_nvcc_out
                    RESULT_VARIABLE moe_nvcc_rc ERROR_QUIET)
    string(REGEX MATCH "release ([0-9]+\\.[0-9]+)" _ "${moe_nvcc_out}")
    set(moe_nvcc_version "${CMAKE_MATCH_1}")
    if(NOT moe_nvcc_rc EQUAL 0 OR NOT moe_nvcc_version)
      moe_cuda_unavailable("${moe_nvcc} --version failed")
    elseif(moe_nvcc_version VERSION_LESS MOE_MIN_CUDA_VERSION)
      moe_cuda_unavailable(
        "${moe_nvcc} is CUDA ${moe_nvcc_version}; ${MOE_MIN_CUDA_VERSION} or newer is needed")
    else()
      # check_language configures a throw-away project, so an nvcc that cannot work with this
      # host compiler is found out here instead of failing the whole configure.
      if(NOT CMAKE_CUDA_COMPILER)
        set(ENV{CUDACXX} "${moe_nvcc}")
      endif()
      include(CheckLanguage)
      check_language(CUDA)
      if(NOT CMAKE_CUDA_COMPILER)
        moe_cuda_unavailable(
          "${moe_nvcc} (CUDA ${moe_nvcc_version}) cannot build a test program here")
      else()
        # sm_90 machine code for Hopper plus compute_90 PTX that newer GPUs JIT-compile.
        if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
          set(CMAKE_CUDA_ARCHITECTURES 90)
        endif()
        enable_language(CUDA)
        find_package(CUDAToolkit REQUIRED)
        set(MOE_HAVE_CUDA ON)
        message(STATUS "moe-serve: CUDA ${moe_nvcc_version} at ${moe_nvcc}, "
                       "architectures ${CMAKE_CUDA_ARCHITECTURES}")
      endif()
    endif()
  endif()
endif()
