// errors: native code throws vffn::Error; the napi layer turns it into a JS Error with `code`.
// never exit or abort: an addon that dies takes the user's server with it.
#pragma once
#include <exception>
#include <string>

namespace vffn {

struct Error : std::exception {
  std::string code;     // stable: ERR_SHAPE, ERR_DTYPE, ERR_DEVICE, ERR_OOM, ERR_ARGUMENT, ...
  std::string message;  // names the argument, what was expected and what came
  Error(std::string c, std::string m) : code(std::move(c)), message(std::move(m)) {}
  const char* what() const noexcept override { return message.c_str(); }
};

[[noreturn]] inline void fail(const char* code, const std::string& msg) { throw Error(code, msg); }

#define VFFN_CHECK(cond, code, msg)         \
  do {                                      \
    if (!(cond)) ::vffn::fail(code, msg);   \
  } while (0)

}  // namespace vffn
