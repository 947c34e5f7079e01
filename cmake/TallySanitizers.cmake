# Sanitizer builds apply to every target in the tree, so third-party callbacks into our code are
# instrumented too. ASan and TSan cannot be combined.
if(TALLY_ASAN AND TALLY_TSAN)
  message(FATAL_ERROR "TALLY_ASAN and TALLY_TSAN cannot be combined; configure two build trees")
endif()
if(TALLY_ASAN)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()
if(TALLY_TSAN)
  # Asio's atomic_thread_fence use trips -Wtsan on g++ 12; it is a known false positive.
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer -Wno-tsan)
  add_link_options(-fsanitize=thread)
endif()
