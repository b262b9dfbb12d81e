// The built-in model's files (models/builtin/config.json and model.safetensors), embedded in the
// binary so that the server runs from any directory with no files. The build passes the absolute
// paths as MOE_BUILTIN_CONFIG_PATH and MOE_BUILTIN_WEIGHTS_PATH (string literals) and rebuilds
// this object when either file changes (OBJECT_DEPENDS in server/CMakeLists.txt).
// server/model/builtin_model.cc exposes the bytes.

        .section .rodata.moe_builtin, "a", @progbits

        .global moe_builtin_config_begin
        .global moe_builtin_config_end
        .type moe_builtin_config_begin, @object
        .balign 64
moe_builtin_config_begin:
        .incbin MOE_BUILTIN_CONFIG_PATH
moe_builtin_config_end:
        .size moe_builtin_config_begin, moe_builtin_config_end - moe_builtin_config_begin

        .global moe_builtin_weights_begin
        .global moe_builtin_weights_end
        .type moe_builtin_weights_begin, @object
        .balign 64
moe_builtin_weights_begin:
        .incbin MOE_BUILTIN_WEIGHTS_PATH
moe_builtin_weights_end:
        .size moe_builtin_weights_begin, moe_builtin_weights_end - moe_builtin_weights_begin

        // No executable stack for the binaries that link this object.
        .section .note.GNU-stack, "", @progbits
