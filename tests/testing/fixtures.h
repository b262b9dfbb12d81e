// Where the reference checkpoints live: $MOE_FIXTURES when set, else the repository's copy in
// tests/fixtures/. Tests cover every folder found there.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace moe::testing {

inline std::string FixturesRoot() {
  if (const char* env = std::getenv("MOE_FIXTURES"); env != nullptr && *env != '\0') return env;
  return MOE_SOURCE_DIR "/tests/fixtures";
}

// Every sub-folder of the fixtures root holding a config.json, sorted.
inline std::vector<std::string> FixtureFolders() {
  std::vector<std::string> folders;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(FixturesRoot(), error)) {
    if (entry.is_directory() && std::filesystem::exists(entry.path() / "config.json")) {
      folders.push_back(entry.path().string());
    }
  }
  std::sort(folders.begin(), folders.end());
  return folders;
}

}  // namespace moe::testing
