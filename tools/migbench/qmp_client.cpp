#include "tools/migbench/qmp_client.h"

#include <google/protobuf/util/json_util.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>
#include <stdexcept>
#include <thread>

namespace keel::migbench {

QmpClient::QmpClient(const std::string& path, std::chrono::milliseconds timeout) : path_(path) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  for (;;) {
    fd_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (::connect(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) break;
    if (std::chrono::steady_clock::now() > deadline)
      throw std::runtime_error("QMP socket " + path + " does not answer");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // QEMU starting up
  }
  read_message();  // the greeting
  execute("qmp_capabilities");
}

google::protobuf::Struct QmpClient::read_message() {
  for (;;) {
    const size_t newline = buffer_.find('\n');
    if (newline != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      google::protobuf::Struct message;
      if (!google::protobuf::util::JsonStringToMessage(line, &message).ok())
        throw std::runtime_error("QMP sent something that is not JSON: " + line);
      return message;
    }
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, 60000) <= 0) throw std::runtime_error("QMP " + path_ + " fell silent");
    char buf[4096];
    ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
    if (n <= 0) throw std::runtime_error("QMP " + path_ + " closed");
    buffer_.append(buf, static_cast<size_t>(n));
  }
}

google::protobuf::Struct QmpClient::execute(const std::string& command,
                                            const std::string& arguments) {
  std::string request = "{\"execute\":\"" + command + "\"" +
                        (arguments.empty() ? "" : ",\"arguments\":" + arguments) + "}\n";
  if (::send(fd_.get(), request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size()))
    throw std::runtime_error("QMP " + path_ + ": cannot send " + command);
  for (;;) {
    google::protobuf::Struct message = read_message();
    const auto& fields = message.fields();
    if (auto it = fields.find("return"); it != fields.end()) {
      return it->second.has_struct_value() ? it->second.struct_value() : google::protobuf::Struct();
    }
    if (auto it = fields.find("error"); it != fields.end()) {
      throw std::runtime_error("QMP " + command + ": " +
                               text_field(it->second.struct_value(), "desc"));
    }
    // An event: not the answer.
  }
}

std::string text_field(const google::protobuf::Struct& s, const std::string& name) {
  auto it = s.fields().find(name);
  return it == s.fields().end() ? "" : it->second.string_value();
}

double number_field(const google::protobuf::Struct& s, const std::string& name) {
  auto it = s.fields().find(name);
  return it == s.fields().end() ? 0 : it->second.number_value();
}

}  // namespace keel::migbench
