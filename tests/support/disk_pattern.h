// The test guest's disk pattern (guest-images/README.md, job disk: word i
// of sector s under a seed), checked from the host in an image file.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace keel::testing {

inline uint64_t pattern_word(uint64_t sector, uint64_t i, uint64_t seed) {
  uint64_t z = ((sector << 6) | i) ^ (seed * 0xd6e8feb86659fd93ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// The first sector of `sectors` from the file's start that does not hold
// the pattern, or -1.
inline int64_t first_bad_sector(const std::string& path, uint64_t sectors, uint64_t seed) {
  std::ifstream in(path, std::ios::binary);
  std::vector<uint64_t> words(64);
  for (uint64_t s = 0; s < sectors; ++s) {
    if (!in.read(reinterpret_cast<char*>(words.data()), 512)) return static_cast<int64_t>(s);
    for (uint64_t i = 0; i < 64; ++i) {
      if (words[i] != pattern_word(s, i, seed)) return static_cast<int64_t>(s);
    }
  }
  return -1;
}

}  // namespace keel::testing
