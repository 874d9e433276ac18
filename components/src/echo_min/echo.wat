;; The minimal echo: `lattice:examples/echo` (echo + version) with no language runtime.
;;
;; One core module with one memory and a bump allocator. The host lowers `msg` into memory
;; through `cabi_realloc`; `echo` hands back the same bytes (a pointer to a return area
;; holding ptr, len) and the post-return function resets the bump pointer, so memory
;; never grows past the largest message. What a call costs is then almost all the host's.
(component
  (core module $m
    (memory (export "memory") 1)
    ;; bytes 0..8: the return area (ptr, len); 16..: "minimal"; heap from 1024
    (global $heap i32 (i32.const 1024))
    (global $next (mut i32) (i32.const 1024))
    (data (i32.const 16) "minimal")

    ;; cabi_realloc(old_ptr, old_size, align, new_size) -> ptr; only fresh allocations
    ;; happen here (the host lowers arguments, nothing is resized)
    (func (export "cabi_realloc") (param i32 i32) (param $align i32) (param $size i32)
      (result i32)
      (local $ptr i32) (local $end i32)
      (local.set $ptr
        (i32.and
          (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get $align))))
      (local.set $end (i32.add (local.get $ptr) (local.get $size)))
      (if (i32.gt_u (local.get $end) (i32.shl (memory.size) (i32.const 16)))
        (then
          (if (i32.eq
                (memory.grow
                  (i32.shr_u
                    (i32.add
                      (i32.sub (local.get $end) (i32.shl (memory.size) (i32.const 16)))
                      (i32.const 65535))
                    (i32.const 16)))
                (i32.const -1))
            (then unreachable))))
      (global.set $next (local.get $end))
      (local.get $ptr))

    (func (export "echo") (param $ptr i32) (param $len i32) (result i32)
      (i32.store (i32.const 0) (local.get $ptr))
      (i32.store (i32.const 4) (local.get $len))
      (i32.const 0))

    (func (export "version") (result i32)
      (i32.store (i32.const 0) (i32.const 16))
      (i32.store (i32.const 4) (i32.const 7))
      (i32.const 0))

    ;; after the host has read the result: the next call starts with an empty heap
    (func (export "reset") (param i32)
      (global.set $next (global.get $heap)))
  )
  (core instance $i (instantiate $m))
  (alias core export $i "memory" (core memory $memory))
  (alias core export $i "cabi_realloc" (core func $realloc))
  (alias core export $i "reset" (core func $reset))

  (func $echo (param "msg" string) (result string)
    (canon lift (core func $i "echo")
      (memory $memory) (realloc $realloc) string-encoding=utf8 (post-return $reset)))
  (func $version (result string)
    (canon lift (core func $i "version")
      (memory $memory) string-encoding=utf8 (post-return $reset)))

  (instance $echo-iface
    (export "echo" (func $echo))
    (export "version" (func $version)))
  (export "lattice:examples/echo@0.1.0" (instance $echo-iface))
)
