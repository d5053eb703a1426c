#include "storage/json_record.h"

#include <fcntl.h>
#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <ctime>
#include <fstream>
#include <iterator>

#include "common/error.h"
#include "common/unique_fd.h"

namespace keel::storage {

namespace fs = std::filesystem;

void write_file_whole(const fs::path& path, std::string_view data) {
  const fs::path tmp = path.string() + ".tmp";
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644));
    if (!fd.valid()) throw_errno("creating " + tmp.string());
    size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ::write(fd.get(), data.data() + done, data.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int err = n < 0 ? errno : EIO;
        ::unlink(tmp.c_str());
        if (err == ENOSPC) throw InputError("the volume is full: writing " + path.string());
        throw_errno(err, "writing " + tmp.string());
      }
      done += static_cast<size_t>(n);
    }
    if (::fsync(fd.get()) != 0) {
      const int err = errno;
      ::unlink(tmp.c_str());
      throw_errno(err, "fsync of " + tmp.string());
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw_errno(err, "renaming " + tmp.string() + " to " + path.filename().string());
  }
  sync_directory(path.parent_path());
}

void sync_directory(const fs::path& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) throw_errno("opening " + dir.string());
  if (::fsync(fd.get()) != 0) throw_errno("fsync of " + dir.string());
}

void write_json_record(const fs::path& path, const google::protobuf::Message& record) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  const auto status = google::protobuf::util::MessageToJsonString(record, &json, options);
  if (!status.ok()) throw std::runtime_error("writing " + path.string() + ": " + status.ToString());
  write_file_whole(path, json);
}

void read_json_record(const fs::path& path, google::protobuf::Message* record) {
  constexpr std::streamsize kMax = 1 << 20;  // records are small; a huge file is not one
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path.string() + ": cannot be read (" + std::strerror(errno) + ")");
  std::string text(kMax + 1, '\0');
  in.read(text.data(), kMax + 1);
  text.resize(static_cast<size_t>(in.gcount()));
  if (static_cast<std::streamsize>(text.size()) > kMax)
    throw InputError(path.string() + ": larger than 1 MiB, not a Keel record");
  google::protobuf::util::JsonParseOptions options;
  const auto status = google::protobuf::util::JsonStringToMessage(text, record, options);
  if (!status.ok()) {
    throw InputError(path.string() + ": not a valid " + record->GetDescriptor()->name() +
                     " record (" + std::string(status.message()) + ")");
  }
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace keel::storage
