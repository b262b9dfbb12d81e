#include "server/model/safetensors.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/kernels/dtype.h"
#include "nlohmann/json.hpp"
#include "tests/testing/fixtures.h"
#include "tests/testing/safetensors_writer.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/status_matchers.h"

namespace moe::model {
namespace {

using ::moe::testing::BuildSafetensors;
using ::moe::testing::F32Tensor;
using ::moe::testing::SafetensorsImage;
using ::moe::testing::StatusIs;
using ::moe::testing::TestTensor;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kName[] = "model.safetensors";

absl::StatusOr<std::unique_ptr<SafetensorsFile>> Parse(const std::vector<std::byte>& image) {
  return SafetensorsFile::FromBytes(image, kName);
}

// An image with `header` as its JSON and `data_bytes` zero bytes of data.
std::vector<std::byte> Image(const std::string& header, size_t data_bytes) {
  return SafetensorsImage(header, std::vector<std::byte>(data_bytes));
}

// An image whose 8-byte length prefix says `length` whatever follows.
std::vector<std::byte> ImageWithLength(uint64_t length, const std::string& rest) {
  std::vector<std::byte> image(8 + rest.size());
  for (int i = 0; i < 8; ++i) image[i] = static_cast<std::byte>((length >> (8 * i)) & 0xff);
  std::memcpy(image.data() + 8, rest.data(), rest.size());
  return image;
}

std::string Entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  uint64_t begin, uint64_t end) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
         ",\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(end) + "]}";
}

// INVALID_ARGUMENT whose message names the file and contains `what`.
::testing::Matcher<absl::StatusOr<std::unique_ptr<SafetensorsFile>>> Refused(
    const std::string& what) {
  return StatusIs(absl::StatusCode::kInvalidArgument,
                  AllOf(HasSubstr(std::string(kName) + ": "), HasSubstr(what)));
}

using ::moe::testing::ScratchDir;

template <typename T>
std::vector<T> Values(const TensorInfo& tensor) {
  std::vector<T> values(tensor.data.size() / sizeof(T));
  std::memcpy(values.data(), tensor.data.data(), values.size() * sizeof(T));
  return values;
}

// --- well-formed files ---

TEST(SafetensorsTest, ReadsTensorsMetadataAndValues) {
  const auto image = BuildSafetensors(
      {F32Tensor("b", {2, 2}, {1, 2, 3, 4}), F32Tensor("a", {3}, {5, 6, 7})}, {{"format", "pt"}});
  MOE_ASSERT_OK_AND_ASSIGN(auto file, Parse(image));
  EXPECT_EQ(file->path(), kName);
  EXPECT_THAT(file->metadata(),
              ElementsAre(std::pair<const std::string, std::string>("format", "pt")));
  // Data-offset order, not name order.
  ASSERT_EQ(file->tensors().size(), 2u);
  EXPECT_EQ(file->tensors()[0].name, "b");
  EXPECT_EQ(file->tensors()[1].name, "a");

  const TensorInfo* b = file->Find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dtype, kernels::DType::kF32);
  EXPECT_THAT(b->shape, ElementsAre(2, 2));
  EXPECT_EQ(b->num_elements, 4);
  EXPECT_THAT(Values<float>(*b), ElementsAre(1, 2, 3, 4));
  const TensorInfo* a = file->Find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_THAT(Values<float>(*a), ElementsAre(5, 6, 7));
  EXPECT_EQ(file->Find("c"), nullptr);
}

TEST(SafetensorsTest, FromBytesOwnsACopyOfTheImage) {
  auto image = BuildSafetensors({F32Tensor("w", {2}, {1.5f, -2.5f})});
  MOE_ASSERT_OK_AND_ASSIGN(auto file, Parse(image));
  std::fill(image.begin(), image.end(), std::byte{0xff});
  EXPECT_THAT(Values<float>(*file->Find("w")), ElementsAre(1.5f, -2.5f));
}

TEST(SafetensorsTest, OpenMapsTheFileAndAppliesTheSameRules) {
  ScratchDir dir;
  const std::string good = dir.File("good.safetensors");
  testing::WriteFile(good, BuildSafetensors({F32Tensor("w", {2, 1}, {3, 4})}));
  MOE_ASSERT_OK_AND_ASSIGN(auto file, SafetensorsFile::Open(good));
  EXPECT_EQ(file->path(), good);
  EXPECT_THAT(file->Find("w")->shape, ElementsAre(2, 1));
  EXPECT_THAT(Values<float>(*file->Find("w")), ElementsAre(3, 4));

  const std::string bad = dir.File("bad.safetensors");
  testing::WriteFile(bad, Image("{" + Entry("w", "F32", "[2]", 0, 8) + "}", 4));
  EXPECT_THAT(
      SafetensorsFile::Open(bad),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr(bad + ": "), HasSubstr("tensor 'w'"), HasSubstr("past the end"))));
}

TEST(SafetensorsTest, AcceptsHeaderWithNoTensors) {
  MOE_ASSERT_OK_AND_ASSIGN(auto file, Parse(Image("{}", 0)));
  EXPECT_THAT(file->tensors(), IsEmpty());
  MOE_ASSERT_OK_AND_ASSIGN(file, Parse(Image("{\"__metadata__\":{}}", 0)));
  EXPECT_THAT(file->tensors(), IsEmpty());
}

TEST(SafetensorsTest, AcceptsTrailingSpacePadding) {
  MOE_ASSERT_OK_AND_ASSIGN(auto file,
                           Parse(Image("{" + Entry("w", "U8", "[3]", 0, 3) + "}     ", 3)));
  EXPECT_THAT(file->Find("w")->shape, ElementsAre(3));
}

TEST(SafetensorsTest, AcceptsZeroSizeAndScalarTensors) {
  TestTensor empty_rows{"empty_rows", kernels::DType::kF32, {0, 4}, {}};
  TestTensor empty_tail{"empty_tail", kernels::DType::kBF16, {3, 0}, {}};
  TestTensor scalar{"scalar", kernels::DType::kI64, {}, std::vector<std::byte>(8)};
  scalar.bytes[0] = std::byte{42};
  // Zero-size tensors tie on begin with their neighbours; all of these share offset 0 or 8.
  const auto image = BuildSafetensors({empty_rows, scalar, F32Tensor("w", {1}, {9}), empty_tail});
  MOE_ASSERT_OK_AND_ASSIGN(auto file, Parse(image));

  const TensorInfo* s = file->Find("scalar");
  ASSERT_NE(s, nullptr);
  EXPECT_THAT(s->shape, IsEmpty());
  EXPECT_EQ(s->num_elements, 1);
  EXPECT_THAT(Values<int64_t>(*s), ElementsAre(42));
  for (const char* name : {"empty_rows", "empty_tail"}) {
    const TensorInfo* e = file->Find(name);
    ASSERT_NE(e, nullptr) << name;
    EXPECT_EQ(e->num_elements, 0) << name;
    EXPECT_TRUE(e->data.empty()) << name;
  }
  EXPECT_THAT(file->Find("empty_rows")->shape, ElementsAre(0, 4));
}

TEST(SafetensorsTest, OrdersTensorsSharingAnOffsetDeterministically) {
  // Listed in two different orders, the same tensors come out in the same order: by begin,
  // then end, then name.
  const std::string z = Entry("z", "F32", "[0]", 0, 0);
  const std::string a = Entry("a", "F32", "[0]", 0, 0);
  const std::string w = Entry("w", "F32", "[1]", 0, 4);
  const std::string e = Entry("e", "F32", "[0]", 4, 4);
  for (const std::string& header :
       {"{" + z + "," + w + "," + a + "," + e + "}", "{" + e + "," + a + "," + z + "," + w + "}"}) {
    MOE_ASSERT_OK_AND_ASSIGN(auto file, Parse(Image(header, 4)));
    std::vector<std::string> names;
    for (const TensorInfo& tensor : file->tensors()) names.push_back(tensor.name);
    EXPECT_THAT(names, ElementsAre("a", "z", "w", "e")) << header;
  }
}

TEST(SafetensorsTest, AcceptsLargeDimensionsWhenAnotherIsZero) {
  // The product of the others would overflow, but the tensor has no elements.
  MOE_ASSERT_OK_AND_ASSIGN(
      auto file,
      Parse(Image(
          "{" + Entry("e", "F32", "[4611686018427387904,4611686018427387904,0]", 0, 0) + "}", 0)));
  EXPECT_EQ(file->Find("e")->num_elements, 0);
}

// --- file size and header length ---

TEST(SafetensorsTest, RefusesEmptyFile) {
  EXPECT_THAT(Parse({}), Refused("file is 0 bytes"));
  ScratchDir dir;
  const std::string path = dir.File("empty.safetensors");
  testing::WriteFile(path, {});
  EXPECT_THAT(SafetensorsFile::Open(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(path), HasSubstr("file is 0 bytes"))));
}

TEST(SafetensorsTest, RefusesFileShorterThanLengthPrefix) {
  EXPECT_THAT(Parse(std::vector<std::byte>(7)), Refused("file is 7 bytes, too short"));
  ScratchDir dir;
  const std::string path = dir.File("short.safetensors");
  testing::WriteFile(path, std::vector<std::byte>(5));
  EXPECT_THAT(SafetensorsFile::Open(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(path), HasSubstr("file is 5 bytes"))));
}

TEST(SafetensorsTest, RefusesMissingFileWithNotFound) {
  ScratchDir dir;
  const std::string path = dir.File("absent.safetensors");
  EXPECT_THAT(SafetensorsFile::Open(path), StatusIs(absl::StatusCode::kNotFound, HasSubstr(path)));
}

TEST(SafetensorsTest, RefusesDirectory) {
  ScratchDir dir;
  const std::string path = dir.File("sub");
  ASSERT_EQ(mkdir(path.c_str(), 0700), 0);
  EXPECT_THAT(SafetensorsFile::Open(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(path), HasSubstr("not a regular file"))));
}

TEST(SafetensorsTest, RefusesHeaderLongerThanFile) {
  EXPECT_THAT(Parse(ImageWithLength(100, "{}")),
              Refused("header length 100 runs past the end of the file: only 2 bytes"));
}

TEST(SafetensorsTest, RefusesHeaderOverCap) {
  EXPECT_THAT(Parse(ImageWithLength(kMaxSafetensorsHeaderBytes + 1, "{}")),
              Refused("header length 100000001 exceeds the limit of 100000000 bytes"));
  // A length that would wrap 8 + length around 64 bits is caught by the same check.
  EXPECT_THAT(Parse(ImageWithLength(~uint64_t{0}, "{}")), Refused("exceeds the limit"));
}

TEST(SafetensorsTest, RefusesHeaderNotStartingWithBrace) {
  EXPECT_THAT(Parse(Image(" {}", 0)), Refused("header must start with '{', found byte 0x20"));
  EXPECT_THAT(Parse(Image("[]", 0)), Refused("header must start with '{', found byte 0x5b"));
  EXPECT_THAT(Parse(Image("", 0)), Refused("header is empty"));
}

// --- JSON syntax ---

TEST(SafetensorsTest, RefusesMalformedJson) {
  EXPECT_THAT(Parse(Image("{\"w\":", 0)), Refused("header is not valid JSON"));
  // Padding is spaces; anything else after the object is not.
  EXPECT_THAT(Parse(Image("{} x", 0)), Refused("header is not valid JSON"));
  EXPECT_THAT(Parse(Image("{/* c */}", 0)), Refused("header is not valid JSON"));
}

TEST(SafetensorsTest, RefusesNulBytesInHeader) {
  // The JSON parser would stop at the NUL and ignore the rest.
  EXPECT_THAT(Parse(Image(std::string("{}\0\0", 4), 0)),
              Refused("header contains a NUL byte at offset 2 of 4"));
  EXPECT_THAT(Parse(Image(std::string("{}\0{\"w\":1}", 10), 0)), Refused("NUL byte"));
}

TEST(SafetensorsTest, RefusesInvalidUtf8InHeader) {
  EXPECT_THAT(Parse(Image("{\"w\xff\":{}}", 0)), Refused("header is not valid JSON"));
}

TEST(SafetensorsTest, RefusesDuplicateKeys) {
  const std::string w = Entry("w", "F32", "[1]", 0, 4);
  EXPECT_THAT(Parse(Image("{" + w + "," + w + "}", 4)),
              Refused("tensor 'w' appears more than once in the header"));
  EXPECT_THAT(Parse(Image("{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],"
                          "\"data_offsets\":[0,4]}}",
                          4)),
              Refused("tensor 'w' has field 'dtype' more than once"));
  EXPECT_THAT(Parse(Image("{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}}", 0)),
              Refused("__metadata__ has key 'a' more than once"));
  EXPECT_THAT(Parse(Image("{\"__metadata__\":{},\"__metadata__\":{}}", 0)),
              Refused("__metadata__ appears more than once"));
}

// --- __metadata__ ---

TEST(SafetensorsTest, RefusesNonObjectMetadata) {
  EXPECT_THAT(Parse(Image("{\"__metadata__\":[\"pt\"]}", 0)),
              Refused("__metadata__ must be an object of string to string, found an array"));
}

TEST(SafetensorsTest, RefusesNonStringMetadata) {
  EXPECT_THAT(Parse(Image("{\"__metadata__\":{\"total\":3}}", 0)),
              Refused("__metadata__ entry 'total' must be a string, found the number 3"));
  EXPECT_THAT(Parse(Image("{\"__metadata__\":{\"nested\":{}}}", 0)),
              Refused("__metadata__ entry 'nested' must be a string, found an object"));
  EXPECT_THAT(Parse(Image("{\"__metadata__\":{\"n\":null}}", 0)),
              Refused("__metadata__ entry 'n' must be a string, found null"));
}

// --- tensor entries ---

TEST(SafetensorsTest, RefusesTensorEntryThatIsNotAnObject) {
  EXPECT_THAT(Parse(Image("{\"w\":[1,2]}", 0)), Refused("tensor 'w' must be an object"));
  EXPECT_THAT(Parse(Image("{\"w\":\"F32\"}", 0)),
              Refused("tensor 'w' must be an object with dtype, shape and data_offsets, found a "
                      "string"));
}

TEST(SafetensorsTest, RefusesUnknownTensorField) {
  EXPECT_THAT(Parse(Image("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],"
                          "\"scale\":0.5}}",
                          4)),
              Refused("tensor 'w' has unknown field 'scale'"));
}

TEST(SafetensorsTest, RefusesMissingTensorFields) {
  EXPECT_THAT(Parse(Image("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4)),
              Refused("tensor 'w' is missing data_offsets"));
  EXPECT_THAT(Parse(Image("{\"w\":{\"data_offsets\":[0,4]}}", 4)),
              Refused("tensor 'w' is missing dtype and shape"));
}

TEST(SafetensorsTest, RefusesUnknownDType) {
  EXPECT_THAT(Parse(Image("{" + Entry("w", "F33", "[1]", 0, 4) + "}", 4)),
              Refused("tensor 'w' has unknown dtype 'F33'"));
  // The spelling is case-sensitive, as the format defines it.
  EXPECT_THAT(Parse(Image("{" + Entry("w", "f32", "[1]", 0, 4) + "}", 4)),
              Refused("tensor 'w' has unknown dtype 'f32'"));
  EXPECT_THAT(Parse(Image("{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4)),
              Refused("tensor 'w' has dtype that is not a string"));
}

TEST(SafetensorsTest, RefusesNegativeDims) {
  EXPECT_THAT(Parse(Image("{" + Entry("w", "F32", "[2,-1]", 0, 4) + "}", 4)),
              Refused("tensor 'w' has negative dimension -1 in its shape"));
}

TEST(SafetensorsTest, RefusesNonIntegerDims) {
  EXPECT_THAT(Parse(Image("{" + Entry("w", "F32", "[1.5]", 0, 4) + "}", 4)),
              Refused("tensor 'w' has a shape entry that is not a non-negative integer, found "
                      "the number 1.5"));
  EXPECT_THAT(Parse(Image("{" + Entry("w", "F32", "[\"1\"]", 0, 4) + "}", 4)),
              Refused("found a string"));
  EXPECT_THAT(Parse(Image("{" + Entry("w", "F32", "[[1]]", 0, 4) + "}", 4)),
              Refused("found an array"));
  EXPECT_THAT(Parse(Image("{" + Entry("w", "F32", "4", 0, 4) + "}", 4)),
              Refused("tensor 'w' has shape that is not an array"));
}

TEST(SafetensorsTest, RefusesDimsThatDoNotFitInt64) {
  EXPECT_THAT(Parse(Image("{" + Entry("w", "U8", "[9223372036854775808]", 0, 4) + "}", 4)),
              Refused("tensor 'w' has dimension 9223372036854775808"));
  // Beyond 64 bits the JSON number is not an integer we can hold at all.
  EXPECT_THAT(Parse(Image("{" + Entry("w", "U8", "[18446744073709551616]", 0, 4) + "}", 4)),
              Refused("tensor 'w' has a shape entry that is not a non-negative integer"));
}

TEST(SafetensorsTest, RefusesOverflowingShape) {
  // Each dimension fits int64, their product does not fit 64 bits.
  EXPECT_THAT(Parse(Image("{" + Entry("w", "F32", "[4294967296,4294967296]", 0, 4) + "}", 4)),
              Refused("tensor 'w' has shape [4294967296, 4294967296] x F32 whose size in bytes "
                      "does not fit in 64 bits"));
  // The element count fits, times the dtype size it does not.
  EXPECT_THAT(Parse(Image("{" + Entry("w", "F64", "[2305843009213693952]", 0, 4) + "}", 4)),
              Refused("does not fit in 64 bits"));
}

TEST(SafetensorsTest, RefusesRankAboveTheLimitWhileParsing) {
  // kMaxTensorRank ones describe one element; one more dimension is refused by name.
  std::string shape = "[1";
  for (size_t i = 1; i < kMaxTensorRank; ++i) shape += ",1";
  MOE_ASSERT_OK_AND_ASSIGN(auto file,
                           Parse(Image("{" + Entry("w", "F32", shape + "]", 0, 4) + "}", 4)));
  EXPECT_EQ(file->Find("w")->shape.size(), kMaxTensorRank);
  EXPECT_THAT(Parse(Image("{" + Entry("w", "F32", shape + ",1]", 0, 4) + "}", 4)),
              Refused("tensor 'w' has more than " + std::to_string(kMaxTensorRank) +
                      " dimensions, the most supported"));

  // A header of one shape with millions of zeros (an empty tensor, so its size is consistent)
  // is refused at the first dimension past the limit rather than stored.
  std::string zeros = "[0";
  for (int i = 1; i < 4'000'000; ++i) zeros += ",0";
  EXPECT_THAT(Parse(Image("{" + Entry("e", "F32", zeros + "]", 0, 0) + "}", 0)),
              Refused("tensor 'e' has more than " + std::to_string(kMaxTensorRank)));
}

TEST(SafetensorsTest, RefusesShapeSizeMismatch) {
  EXPECT_THAT(Parse(Image("{" + Entry("w", "F32", "[2,2]", 0, 12) + "}", 12)),
              Refused("model.safetensors: tensor 'w' has data_offsets [0, 12] but shape [2, 2] x "
                      "F32 needs 16 bytes"));
  EXPECT_THAT(Parse(Image("{" + Entry("s", "BF16", "[]", 0, 4) + "}", 4)),
              Refused("tensor 's' has data_offsets [0, 4] but shape [] x BF16 needs 2 bytes"));
}

TEST(SafetensorsTest, RefusesMalformedDataOffsets) {
  EXPECT_THAT(Parse(Image("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 1)),
              Refused("tensor 'w' has 1 data_offsets, expected [begin, end]"));
  EXPECT_THAT(Parse(Image("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 1)),
              Refused("tensor 'w' has more than 2 data_offsets"));
  EXPECT_THAT(Parse(Image("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}", 1)),
              Refused("tensor 'w' has negative data offset -1"));
  EXPECT_THAT(Parse(Image("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":{}}}", 1)),
              Refused("tensor 'w' has data_offsets that are not [begin, end], found an object"));
}

TEST(SafetensorsTest, RefusesDataOffsetsWithBeginAfterEnd) {
  EXPECT_THAT(Parse(Image("{" + Entry("w", "U8", "[1]", 2, 1) + "}", 2)),
              Refused("tensor 'w' has data_offsets [2, 1] whose begin is after its end"));
}

// --- data buffer tiling ---

TEST(SafetensorsTest, RefusesOverlappingTensorOffsets) {
  const std::string header =
      "{" + Entry("a", "F32", "[4]", 0, 16) + "," + Entry("b", "F32", "[4]", 8, 24) + "}";
  EXPECT_THAT(Parse(Image(header, 24)),
              Refused("tensor 'b' has data_offsets [8, 24] overlapping tensor 'a' at [0, 16]"));
  // Two tensors on the very same bytes.
  const std::string same =
      "{" + Entry("a", "F32", "[1]", 0, 4) + "," + Entry("b", "F32", "[1]", 0, 4) + "}";
  EXPECT_THAT(Parse(Image(same, 4)), Refused("tensor 'b' has data_offsets [0, 4] overlapping"));
  // An empty tensor inside another one's bytes.
  const std::string inside =
      "{" + Entry("a", "F32", "[2]", 0, 8) + "," + Entry("e", "F32", "[0]", 4, 4) + "}";
  EXPECT_THAT(Parse(Image(inside, 8)), Refused("tensor 'e' has data_offsets [4, 4] overlapping"));
}

TEST(SafetensorsTest, RefusesGapBetweenTensors) {
  const std::string header =
      "{" + Entry("a", "F32", "[1]", 0, 4) + "," + Entry("b", "F32", "[1]", 8, 12) + "}";
  EXPECT_THAT(Parse(Image(header, 12)),
              Refused("4 unused bytes between tensor 'a' ending at offset 4 and tensor 'b' "
                      "beginning at offset 8"));
}

TEST(SafetensorsTest, RefusesFirstTensorNotAtZero) {
  EXPECT_THAT(Parse(Image("{" + Entry("w", "F32", "[1]", 4, 8) + "}", 8)),
              Refused("tensor 'w' has data_offsets [4, 8] but the first tensor must begin at "
                      "offset 0"));
}

TEST(SafetensorsTest, RefusesTrailingBytes) {
  EXPECT_THAT(Parse(Image("{" + Entry("w", "F32", "[1]", 0, 4) + "}", 6)),
              Refused("2 trailing bytes after the last tensor 'w' ends at offset 4"));
  EXPECT_THAT(Parse(Image("{}", 3)),
              Refused("header lists no tensors but the data buffer holds 3"));
}

TEST(SafetensorsTest, RefusesOffsetsPastEnd) {
  EXPECT_THAT(Parse(Image("{" + Entry("w", "F32", "[4]", 0, 16) + "}", 8)),
              Refused("tensor 'w' has data_offsets [0, 16] past the end of the data buffer, "
                      "which holds 8 bytes"));
  // Offsets near 2^64 must not wrap around into the buffer.
  const std::string huge = std::to_string(~uint64_t{0});
  EXPECT_THAT(Parse(Image("{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[" + huge + "," +
                              huge + "]}}",
                          0)),
              Refused("past the end"));
}

TEST(SafetensorsTest, NamesHostileTensorNamesPrintably) {
  // Control characters are escaped and long names cut short, so errors stay readable.
  EXPECT_THAT(Parse(Image("{\"a\\u0001b\":{\"dtype\":\"Q\"}}", 0)),
              Refused("tensor 'a\\001b' has unknown dtype 'Q'"));
  const auto result = Parse(Image("{\"" + std::string(1000, 'x') + "\":{\"dtype\":\"Q\"}}", 0));
  EXPECT_THAT(result, Refused("(1000 bytes)"));
  EXPECT_LT(result.status().message().size(), 500u);
}

TEST(SafetensorsTest, EveryTruncationOfAValidFileIsRefused) {
  const auto image = BuildSafetensors(
      {F32Tensor("a", {2, 3}, {1, 2, 3, 4, 5, 6}), F32Tensor("b", {1}, {7})}, {{"k", "v"}});
  for (size_t size = 0; size < image.size(); ++size) {
    const std::vector<std::byte> prefix(image.begin(), image.begin() + size);
    EXPECT_THAT(Parse(prefix), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(kName)))
        << "prefix of " << size << " bytes";
  }
}

TEST(SafetensorsTest, ByteFlipsNeverCrash) {
  // Each single-byte corruption either still parses (a changed value) or is refused; with
  // sanitizers this checks that nothing reads outside the image.
  const auto image = BuildSafetensors(
      {F32Tensor("a", {2, 2}, {1, 2, 3, 4}), F32Tensor("b", {1}, {5})}, {{"k", "v"}});
  for (size_t i = 0; i < image.size(); ++i) {
    for (const uint8_t value : {0x00, 0x20, 0x22, 0x2c, 0x2d, 0x30, 0x39, 0x5b, 0x7b, 0x7d, 0xff}) {
      std::vector<std::byte> corrupt = image;
      corrupt[i] = static_cast<std::byte>(value);
      const auto result = Parse(corrupt);
      if (!result.ok()) {
        EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
        EXPECT_THAT(std::string(result.status().message()), HasSubstr(kName));
        continue;
      }
      for (const TensorInfo& tensor : (*result)->tensors()) {
        EXPECT_EQ(tensor.data.size(),
                  static_cast<size_t>(tensor.num_elements) * kernels::DTypeSize(tensor.dtype));
      }
    }
  }
}

// --- reference files ---

TEST(SafetensorsTest, ReadsFixtureFiles) {
  const std::vector<std::string> folders = testing::FixtureFolders();
  ASSERT_FALSE(folders.empty()) << "no fixtures under " << testing::FixturesRoot();
  for (const std::string& folder : folders) {
    SCOPED_TRACE(folder);
    std::ifstream config_stream(folder + "/config.json");
    const nlohmann::json config = nlohmann::json::parse(config_stream);
    const int64_t vocab = config.at("vocab_size").get<int64_t>();
    const int64_t hidden = config.at("hidden_size").get<int64_t>();
    const int64_t top_k = config.at("num_experts_per_tok").get<int64_t>();

    for (const char* name : {"model.safetensors", "reference.safetensors"}) {
      const std::string path = folder + "/" + name;
      MOE_ASSERT_OK_AND_ASSIGN(auto file, SafetensorsFile::Open(path));
      ASSERT_FALSE(file->tensors().empty()) << path;
      // Every tensor's bytes are its elements, and they tile the data buffer in order.
      const std::byte* next = file->tensors().front().data.data();
      for (const TensorInfo& tensor : file->tensors()) {
        int64_t elements = 1;
        for (const int64_t dim : tensor.shape) elements *= dim;
        EXPECT_EQ(tensor.num_elements, elements) << tensor.name;
        EXPECT_EQ(tensor.data.size(),
                  static_cast<size_t>(elements) * kernels::DTypeSize(tensor.dtype))
            << tensor.name;
        EXPECT_EQ(tensor.data.data(), next) << tensor.name;
        next = tensor.data.data() + tensor.data.size();
        EXPECT_EQ(file->Find(tensor.name), &tensor);
      }
    }

    MOE_ASSERT_OK_AND_ASSIGN(auto model, SafetensorsFile::Open(folder + "/model.safetensors"));
    const TensorInfo* embed = model->Find("model.embed_tokens.weight");
    ASSERT_NE(embed, nullptr);
    EXPECT_THAT(embed->shape, ElementsAre(vocab, hidden));

    MOE_ASSERT_OK_AND_ASSIGN(auto reference,
                             SafetensorsFile::Open(folder + "/reference.safetensors"));
    EXPECT_TRUE(reference->metadata().count("min_router_logit_margin"));
    for (const auto& [sequence, tokens] :
         std::vector<std::pair<std::string, int64_t>>{{"seq0", 7}, {"seq1", 19}}) {
      const TensorInfo* ids = reference->Find(sequence + ".input_ids");
      ASSERT_NE(ids, nullptr) << sequence;
      EXPECT_EQ(ids->dtype, kernels::DType::kI64);
      EXPECT_THAT(ids->shape, ElementsAre(tokens));
      for (const int64_t id : Values<int64_t>(*ids)) {
        EXPECT_GE(id, 0);
        EXPECT_LT(id, vocab);
      }
      const TensorInfo* topk = reference->Find(sequence + ".layers.0.topk_ids");
      ASSERT_NE(topk, nullptr) << sequence;
      EXPECT_EQ(topk->dtype, kernels::DType::kI32);
      EXPECT_THAT(topk->shape, ElementsAre(tokens, top_k));
      const TensorInfo* logits = reference->Find(sequence + ".logits");
      ASSERT_NE(logits, nullptr) << sequence;
      EXPECT_EQ(logits->dtype, kernels::DType::kF32);
      EXPECT_THAT(logits->shape, ElementsAre(tokens, vocab));
    }
  }
}

TEST(SafetensorsTest, ReadsKnownFixtureValues) {
  MOE_ASSERT_OK_AND_ASSIGN(
      auto reference,
      SafetensorsFile::Open(testing::FixturesRoot() + "/mixtral-tiny-bf16/reference.safetensors"));
  const TensorInfo* ids = reference->Find("seq0.input_ids");
  ASSERT_NE(ids, nullptr);
  EXPECT_THAT(Values<int64_t>(*ids), ElementsAre(205, 95, 8, 205, 342, 65, 498));
}

}  // namespace
}  // namespace moe::model
