// keelctl's exit codes, the same for every command (README, "keelctl").
#pragma once

namespace keel {

enum Exit { kDone = 0, kRefused = 1, kBadCommandLine = 2, kNoConnection = 3, kNoAnswer = 4 };

}  // namespace keel
