// Reads the Prometheus text exposition format back into samples, for tests that check what
// /metrics says. Handles what prometheus-cpp writes: `name{k="v",...} value` lines, comments,
// escaped quotes and backslashes in label values.
#pragma once

#include <cstdlib>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace moe::testing {

struct ExpositionSample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0.0;
};

inline std::vector<ExpositionSample> ParseExposition(const std::string& text) {
  std::vector<ExpositionSample> samples;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    ExpositionSample sample;
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    sample.name = line.substr(0, i);
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        const size_t equals = line.find('=', i);
        if (equals == std::string::npos) break;
        const std::string key = line.substr(i, equals - i);
        std::string value;
        size_t j = equals + 2;  // past ="
        for (; j < line.size() && line[j] != '"'; ++j) {
          if (line[j] == '\\' && j + 1 < line.size()) {
            ++j;
            value += line[j] == 'n' ? '\n' : line[j];
          } else {
            value += line[j];
          }
        }
        sample.labels[key] = value;
        i = j + 1;
        if (i < line.size() && line[i] == ',') ++i;
      }
      ++i;  // past }
    }
    sample.value = std::strtod(line.c_str() + i, nullptr);
    samples.push_back(std::move(sample));
  }
  return samples;
}

// The value of the sample named `name` whose labels include every pair of `labels`; nullopt
// when none matches.
inline std::optional<double> FindSample(const std::vector<ExpositionSample>& samples,
                                        const std::string& name,
                                        const std::map<std::string, std::string>& labels = {}) {
  for (const ExpositionSample& sample : samples) {
    if (sample.name != name) continue;
    bool match = true;
    for (const auto& [key, value] : labels) {
      auto it = sample.labels.find(key);
      if (it == sample.labels.end() || it->second != value) match = false;
    }
    if (match) return sample.value;
  }
  return std::nullopt;
}

// How many samples are named `name` (or start with `name` when `prefix` is true).
inline int64_t CountSamples(const std::vector<ExpositionSample>& samples, const std::string& name,
                            bool prefix = false) {
  int64_t count = 0;
  for (const ExpositionSample& sample : samples) {
    if (prefix ? sample.name.rfind(name, 0) == 0 : sample.name == name) ++count;
  }
  return count;
}

}  // namespace moe::testing
