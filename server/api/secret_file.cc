#include "server/api/secret_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moe::api {
namespace {

// Certificates, keys and token lists are kilobytes; a larger file is a wrong path.
constexpr size_t kMaxBytes = 1 << 20;

absl::Status ErrnoStatus(int error, absl::string_view what) {
  const std::string message = absl::StrCat(what, std::strerror(error));
  if (error == ENOENT || error == ENOTDIR) return absl::NotFoundError(message);
  if (error == EACCES || error == EPERM) return absl::PermissionDeniedError(message);
  return absl::FailedPreconditionError(message);
}

}  // namespace

absl::StatusOr<std::string> ReadSecretFile(absl::string_view flag, const std::string& path) {
  const std::string prefix = absl::StrCat(flag, " ", path, ": ");
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat(prefix, "cannot open: "));
  const absl::Cleanup close_fd = [fd] { close(fd); };
  struct stat info {};
  if (fstat(fd, &info) != 0) return ErrnoStatus(errno, absl::StrCat(prefix, "cannot stat: "));
  if (S_ISDIR(info.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(prefix, "is a directory, not a file"));
  }
  std::string contents;
  char buffer[4096];
  while (true) {
    const ssize_t got = read(fd, buffer, sizeof(buffer));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return ErrnoStatus(errno, absl::StrCat(prefix, "cannot read: "));
    if (got == 0) break;
    contents.append(buffer, static_cast<size_t>(got));
    if (contents.size() > kMaxBytes) {
      return absl::FailedPreconditionError(
          absl::StrCat(prefix, "larger than ", kMaxBytes, " bytes; is it the right file?"));
    }
  }
  return contents;
}

}  // namespace moe::api
