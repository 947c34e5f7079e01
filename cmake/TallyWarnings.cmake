# One warning set for every Tally target; TALLY_WERROR turns them into errors (CI sets it).
add_library(tally_warnings INTERFACE)
target_compile_options(tally_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast -Wcast-align
  -Woverloaded-virtual -Wimplicit-fallthrough)
if(TALLY_WERROR)
  target_compile_options(tally_warnings INTERFACE -Werror)
endif()
