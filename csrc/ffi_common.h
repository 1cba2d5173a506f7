// Shared by the csrc/*.cpp files: errors cross the extern "C" boundary as a return code plus a
// thread-local message (steptune_last_error), never as a C++ exception.
#pragma once
#include <c10/util/Exception.h>

#include <exception>
#include <string>

namespace steptune {
void set_last_error(std::string message);

template <typename F>
int guarded(F&& body) {
  try {
    body();
    return 0;
  } catch (const c10::Error& e) {
    // The message without libtorch's C++ backtrace, which says nothing to a user.
    set_last_error(e.what_without_backtrace());
  } catch (const std::exception& e) {
    set_last_error(e.what());
  } catch (...) {
    set_last_error("unknown C++ exception");
  }
  return 1;
}
}  // namespace steptune
