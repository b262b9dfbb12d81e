// SentencePiece behind a C interface, in a module of its own that the server loads with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND). Debian's libsentencepiece 0.1.97 carries its own copy of
// protobuf 3.14 and exports its symbols; linked into a process that also has gRPC's
// libprotobuf 3.21, the two copies interpose each other and the process dies in static
// initialisation. Loaded deep-bound and local, the module and libsentencepiece resolve
// protobuf to their own copy and nothing else sees them. (The SentencePiece header also
// declares an `absl::string_view` that clashes with Debian's abseil; this interface keeps it
// out of every other file too.)
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {

// Where a call reports an error or returns bytes: the module calls `write(context, data, size)`.
typedef void (*moe_spm_sink)(void* context, const char* data, size_t size);

// A loaded model, or null with the reason written to `error`.
void* moe_spm_load(const char* path, moe_spm_sink error, void* error_context);
void moe_spm_free(void* model);
int32_t moe_spm_piece_count(const void* model);
// Writes the ids (int32, native endianness) of `text` to `out`; false with the reason written
// to `error`.
bool moe_spm_encode(const void* model, const char* text, size_t size, moe_spm_sink out,
                    void* out_context, moe_spm_sink error, void* error_context);
// Writes the text of `ids` to `out`; false with the reason written to `error`.
bool moe_spm_decode(const void* model, const int32_t* ids, size_t count, moe_spm_sink out,
                    void* out_context, moe_spm_sink error, void* error_context);
}
