#include "server/model/safetensors_writer.h"

#include <cstring>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/model/safetensors.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/status_matchers.h"

namespace moe::model {
namespace {

using ::moe::testing::IsOk;
using ::moe::testing::StatusIs;
using ::testing::HasSubstr;

std::span<const std::byte> Bytes(const std::vector<float>& values) {
  return std::as_bytes(std::span<const float>(values));
}

TEST(SafetensorsWriterTest, WritesWhatTheReaderAccepts) {
  testing::ScratchDir dir;
  const std::string path = dir.File("out.safetensors");
  const std::vector<float> a = {1, 2, 3, 4, 5, 6};
  const std::vector<float> b = {-1.5f};
  const std::vector<uint16_t> c = {kernels::FloatToBF16(0.25f), kernels::FloatToBF16(-8.0f)};
  MOE_ASSERT_OK(WriteSafetensorsFile(
      path,
      {{{"a", kernels::DType::kF32, {2, 3}}, Bytes(a)},
       {{"scalar", kernels::DType::kF32, {}}, Bytes(b)},
       {{"half", kernels::DType::kBF16, {2}}, std::as_bytes(std::span<const uint16_t>(c))}},
      {{"format", "test"}}));
  EXPECT_EQ(std::filesystem::file_size(path) % 8, 0u);  // header padded, 4+4+... data

  MOE_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(path));
  ASSERT_EQ(file->tensors().size(), 3u);
  EXPECT_EQ(file->metadata().at("format"), "test");
  const TensorInfo* read_a = file->Find("a");
  ASSERT_NE(read_a, nullptr);
  EXPECT_EQ(read_a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::memcmp(read_a->data.data(), a.data(), a.size() * 4), 0);
  const TensorInfo* scalar = file->Find("scalar");
  ASSERT_NE(scalar, nullptr);
  EXPECT_TRUE(scalar->shape.empty());
  EXPECT_EQ(std::memcmp(scalar->data.data(), b.data(), 4), 0);
  const TensorInfo* half = file->Find("half");
  ASSERT_NE(half, nullptr);
  EXPECT_EQ(half->dtype, kernels::DType::kBF16);
  EXPECT_FALSE(std::filesystem::exists(path + ".partial"));
}

TEST(SafetensorsWriterTest, SerializedImageMatchesTheFile) {
  testing::ScratchDir dir;
  const std::string path = dir.File("x.safetensors");
  const std::vector<float> a = {3, 1, 4};
  const std::vector<NamedTensor> tensors = {{{"x", kernels::DType::kF32, {3}}, Bytes(a)}};
  MOE_ASSERT_OK(WriteSafetensorsFile(path, tensors));
  MOE_ASSERT_OK_AND_ASSIGN(std::vector<std::byte> image, SerializeSafetensors(tensors));
  std::vector<std::byte> on_disk(std::filesystem::file_size(path));
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> in(std::fopen(path.c_str(), "rb"), std::fclose);
  ASSERT_NE(in, nullptr);
  ASSERT_EQ(std::fread(on_disk.data(), 1, on_disk.size(), in.get()), on_disk.size());
  EXPECT_EQ(image, on_disk);
  MOE_EXPECT_OK(SafetensorsFile::FromBytes(image, "image"));
}

TEST(SafetensorsWriterTest, RefusesDataOfTheWrongSize) {
  testing::ScratchDir dir;
  const std::vector<float> a = {1, 2, 3};
  EXPECT_THAT(
      WriteSafetensorsFile(dir.File("bad.safetensors"),
                           {{{"w", kernels::DType::kF32, {2, 2}}, Bytes(a)}}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("tensor 'w' of shape [2, 2] and dtype F32 needs 16 bytes, got 12")));
  // A failed write leaves nothing behind.
  EXPECT_FALSE(std::filesystem::exists(dir.File("bad.safetensors")));
  EXPECT_FALSE(std::filesystem::exists(dir.File("bad.safetensors.partial")));
}

TEST(SafetensorsWriterTest, RefusesDuplicateAndReservedNames) {
  const std::vector<float> a = {1};
  EXPECT_THAT(SerializeSafetensors({{{"w", kernels::DType::kF32, {1}}, Bytes(a)},
                                    {{"w", kernels::DType::kF32, {1}}, Bytes(a)}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'w' is listed twice")));
  EXPECT_THAT(SerializeSafetensors({{{"__metadata__", kernels::DType::kF32, {1}}, Bytes(a)}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("reserved")));
  EXPECT_THAT(SerializeSafetensors({{{"n", kernels::DType::kF32, {-1}}, Bytes(a)}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("negative")));
}

TEST(SafetensorsWriterTest, FinishBeforeEveryTensorIsAnErrorAndLeavesNoFile) {
  testing::ScratchDir dir;
  const std::string path = dir.File("partial.safetensors");
  {
    MOE_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SafetensorsWriter> writer,
                             SafetensorsWriter::Create(path, {{"a", kernels::DType::kF32, {1}},
                                                              {"b", kernels::DType::kF32, {1}}}));
    const std::vector<float> one = {1};
    MOE_ASSERT_OK(writer->Append(Bytes(one)));
    ASSERT_NE(writer->next(), nullptr);
    EXPECT_EQ(writer->next()->name, "b");
    EXPECT_THAT(writer->Finish(),
                StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("next is 'b'")));
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".partial"));
}

}  // namespace
}  // namespace moe::model
