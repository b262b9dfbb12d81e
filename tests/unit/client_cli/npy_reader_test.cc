// The .npy reader: files of each accepted dtype and shape, written byte by byte here as NumPy
// writes them, read back exactly; malformed files refused with a message naming the file and
// the problem.
#include "client/cli/npy_reader.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/kernels/dtype.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/status_matchers.h"

namespace moe::client::cli {
namespace {

using ::moe::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A .npy file: magic, version, header length (2 bytes for 1.0, 4 for 2.0 and 3.0), the header
// dict padded with spaces and a newline so that the data starts at a multiple of 64, the data.
std::string NpyFile(const std::string& dict, const std::string& data, int major = 1) {
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  const size_t length_bytes = major == 1 ? 2 : 4;
  const size_t prefix = out.size() + length_bytes;
  std::string header = dict;
  const size_t total = prefix + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  for (size_t i = 0; i < length_bytes; ++i) {
    out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  }
  return out + header + data;
}

template <typename T>
std::string Bytes(const std::vector<T>& values) {
  std::string out(values.size() * sizeof(T), '\0');
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

std::string Dict(const std::string& descr, const std::string& shape, bool fortran = false) {
  return "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") +
         ", 'shape': " + shape + ", }";
}

TEST(ClientCliNpyReader, ReadsFloat32Matrix) {
  const std::vector<float> values = {0.0f, 0.5f, 1.0f, -2.25f, 3.5f, 1e-3f};
  const auto rows = ParseNpy(NpyFile(Dict("<f4", "(2, 3)"), Bytes(values)), "m.npy");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->rows, 2);
  EXPECT_EQ(rows->width, 3);
  EXPECT_EQ(rows->values, values);
}

TEST(ClientCliNpyReader, ReadsOneDimensionalArrayAsOneRow) {
  const std::vector<float> values = {1.0f, 2.0f, 3.0f, 4.0f};
  const auto rows = ParseNpy(NpyFile(Dict("<f4", "(4,)"), Bytes(values)), "v.npy");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->rows, 1);
  EXPECT_EQ(rows->width, 4);
  EXPECT_EQ(rows->values, values);
}

TEST(ClientCliNpyReader, ConvertsFloat64ToFloat32) {
  const std::vector<double> values = {0.1, -1.5, 1e10, 2.0};
  const auto rows = ParseNpy(NpyFile(Dict("<f8", "(2, 2)"), Bytes(values)), "d.npy");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_THAT(rows->values, ElementsAre(0.1f, -1.5f, 1e10f, 2.0f));
}

TEST(ClientCliNpyReader, ConvertsFloat16ToFloat32) {
  // 1.0, -2.0, 0.5, 65504 (largest half), 2^-24 (smallest subnormal), -0.0
  const std::vector<uint16_t> bits = {0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x8000};
  const auto rows = ParseNpy(NpyFile(Dict("<f2", "(1, 6)"), Bytes(bits)), "h.npy");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_THAT(rows->values,
              ElementsAre(1.0f, -2.0f, 0.5f, 65504.0f, 5.9604644775390625e-8f, -0.0f));
  EXPECT_TRUE(std::signbit(rows->values[5]));
}

TEST(ClientCliNpyReader, HalfConversionMatchesTheKernelsForEveryBitPattern) {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const float ours = HalfBitsToFloat(static_cast<uint16_t>(bits));
    const float reference = kernels::HalfToFloat(static_cast<uint16_t>(bits));
    if (std::isnan(reference)) {
      EXPECT_TRUE(std::isnan(ours)) << std::hex << bits;
      continue;
    }
    uint32_t a, b;
    std::memcpy(&a, &ours, 4);
    std::memcpy(&b, &reference, 4);
    ASSERT_EQ(a, b) << "half bits 0x" << std::hex << bits << ": " << ours << " vs " << reference;
  }
}

TEST(ClientCliNpyReader, ReadsFormatVersions2And3) {
  const std::vector<float> values = {1.0f, 2.0f};
  for (int major : {2, 3}) {
    const auto rows = ParseNpy(NpyFile(Dict("<f4", "(1, 2)"), Bytes(values), major), "v.npy");
    ASSERT_TRUE(rows.ok()) << "version " << major << ".0: " << rows.status();
    EXPECT_EQ(rows->values, values);
  }
}

TEST(ClientCliNpyReader, AcceptsDoubleQuotesAndKeysInAnyOrder) {
  const std::vector<float> values = {1.0f, 2.0f};
  const auto rows = ParseNpy(
      NpyFile("{\"shape\": (1,2), \"fortran_order\": False, \"descr\": \"<f4\"}", Bytes(values)),
      "q.npy");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->values, values);
}

TEST(ClientCliNpyReader, FortranOrderOfOneDimensionIsTheSameLayout) {
  const std::vector<float> values = {1.0f, 2.0f, 3.0f};
  const auto rows = ParseNpy(NpyFile(Dict("<f4", "(3,)", true), Bytes(values)), "f.npy");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->values, values);
}

TEST(ClientCliNpyReader, RefusesBadMagic) {
  std::string file = NpyFile(Dict("<f4", "(1, 1)"), Bytes(std::vector<float>{1.0f}));
  file[1] = 'X';
  EXPECT_THAT(ParseNpy(file, "bad.npy"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("bad.npy"), HasSubstr("not a .npy file"))));
  EXPECT_THAT(ParseNpy("[[1, 2]]", "rows.npy"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rows.npy")));
  EXPECT_THAT(ParseNpy("", "empty.npy"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty.npy")));
}

TEST(ClientCliNpyReader, RefusesUnknownVersion) {
  EXPECT_THAT(
      ParseNpy(NpyFile(Dict("<f4", "(1, 1)"), Bytes(std::vector<float>{1.0f}), 4), "v4.npy"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("v4.npy"), HasSubstr("version 4.0"))));
}

TEST(ClientCliNpyReader, RefusesFortranOrder) {
  EXPECT_THAT(
      ParseNpy(NpyFile(Dict("<f4", "(2, 2)", true), Bytes(std::vector<float>(4))), "f.npy"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("f.npy"), HasSubstr("Fortran"), HasSubstr("ascontiguousarray"))));
}

TEST(ClientCliNpyReader, RefusesBigEndian) {
  EXPECT_THAT(ParseNpy(NpyFile(Dict(">f4", "(1, 2)"), Bytes(std::vector<float>(2))), "be.npy"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("be.npy"), HasSubstr("big-endian"))));
}

TEST(ClientCliNpyReader, RefusesOtherDtypes) {
  for (const std::string descr : {"<i4", "<i8", "|u1", "|b1", "<c8", "<U3"}) {
    EXPECT_THAT(ParseNpy(NpyFile(Dict(descr, "(1, 2)"), std::string(64, '\0')), "t.npy"),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("t.npy"), HasSubstr(descr), HasSubstr("'<f4'"))))
        << descr;
  }
  EXPECT_THAT(ParseNpy(NpyFile("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }",
                               std::string(4, '\0')),
                       "s.npy"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("structured")));
}

TEST(ClientCliNpyReader, RefusesDataOfTheWrongSize) {
  const std::string dict = Dict("<f4", "(2, 3)");
  EXPECT_THAT(ParseNpy(NpyFile(dict, Bytes(std::vector<float>(5))), "short.npy"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("short.npy"), HasSubstr("needs 2 x 3 x 4 bytes"),
                             HasSubstr("holds 20"))));
  EXPECT_THAT(ParseNpy(NpyFile(dict, Bytes(std::vector<float>(7))), "long.npy"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("holds 28")));
  // A shape whose byte count overflows 64 bits.
  EXPECT_THAT(
      ParseNpy(NpyFile(Dict("<f4", "(9223372036854775807, 4)"), Bytes(std::vector<float>(4))),
               "huge.npy"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("huge.npy")));
}

TEST(ClientCliNpyReader, RefusesShapesThatAreNotRows) {
  EXPECT_THAT(ParseNpy(NpyFile(Dict("<f4", "()"), Bytes(std::vector<float>(1))), "s.npy"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("0 dimensions")));
  EXPECT_THAT(ParseNpy(NpyFile(Dict("<f4", "(1, 2, 2)"), Bytes(std::vector<float>(4))), "c.npy"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("(1, 2, 2)"), HasSubstr("3 dimensions"))));
  EXPECT_THAT(ParseNpy(NpyFile(Dict("<f4", "(0, 64)"), ""), "z.npy"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no values")));
}

TEST(ClientCliNpyReader, RefusesMalformedHeaders) {
  const std::string data = Bytes(std::vector<float>(2));
  for (const std::string dict : {
           "{'descr': '<f4', 'shape': (1, 2), }",                                // missing key
           "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), 'x': 1}",  // extra key
           "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1, 2)}",
           "{'descr': '<f4', 'fortran_order': false, 'shape': (1, 2)}",  // not Python
           "{'descr': '<f4', 'fortran_order': False, 'shape': (1, -2)}",
           "{'descr': '<f4', 'fortran_order': False, 'shape': [1, 2]}",
           "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2)",
       }) {
    EXPECT_THAT(ParseNpy(NpyFile(dict, data), "h.npy"),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("h.npy"), HasSubstr("not a valid .npy file"))))
        << dict;
  }
  // A header length beyond the end of the file.
  std::string file = NpyFile(Dict("<f4", "(1, 2)"), data);
  file[8] = '\xff';
  file[9] = '\x7f';
  EXPECT_THAT(ParseNpy(file, "t.npy"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("header says")));
}

TEST(ClientCliNpyReader, ReadsAFileAndNamesAMissingOne) {
  testing::ScratchDir scratch;
  const std::string path = scratch.File("rows.npy");
  const std::vector<float> values = {1.0f, 2.0f};
  std::ofstream(path, std::ios::binary) << NpyFile(Dict("<f4", "(1, 2)"), Bytes(values));
  const auto rows = ReadNpyFile(path);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->values, values);
  EXPECT_THAT(ReadNpyFile(scratch.File("missing.npy")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing.npy")));
}

}  // namespace
}  // namespace moe::client::cli
