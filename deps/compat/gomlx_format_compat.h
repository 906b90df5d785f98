// Supplies std::format for standard libraries that lack <format> (GCC 12).
// mlx-c only formats error messages with "{}" placeholders, so a small
// stream-based substitution is enough.
#pragma once
#ifdef __cplusplus
#include <version>
#if !defined(__cpp_lib_format)
#include <sstream>
#include <string>
#include <string_view>
namespace std {
inline void gomlx_format_one(std::ostringstream &out, std::string_view &fmt) {
  out << fmt;
  fmt = {};
}
template <class T, class... Rest>
inline void gomlx_format_one(std::ostringstream &out, std::string_view &fmt,
                             const T &value, const Rest &...rest) {
  auto pos = fmt.find("{}");
  if (pos == std::string_view::npos) {
    out << fmt;
    fmt = {};
    return;
  }
  out << fmt.substr(0, pos) << value;
  fmt.remove_prefix(pos + 2);
  gomlx_format_one(out, fmt, rest...);
}
template <class... Args>
inline std::string format(std::string_view fmt, const Args &...args) {
  std::ostringstream out;
  gomlx_format_one(out, fmt, args...);
  return out.str();
}
} // namespace std
#endif
#endif
