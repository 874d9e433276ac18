;; The minimal counter: `lattice:examples/counter`'s `increment` with no language runtime.
;;
;; It does what the componentize-py counter does (open the default bucket "", call
;; wasi:keyvalue/atomics.increment(bucket, key, 1), drop the bucket, turn a keyvalue
;; error into its string form), so `bench provider` can tell the host's and provider's
;; cost from the guest's. Only `increment` is exported. Memory layout: 0..16 the export's
;; return area, 64.. and 80.. the two fixed error texts, 128.. `open`'s return area,
;; 160.. `increment`'s, heap (strings the host lowers) from 1024, reset after each call.
(component
  (type $store-type
    (instance
      (export (;0;) "bucket" (type (sub resource)))
      (type (;1;) (variant (case "no-such-store") (case "access-denied") (case "other" string)))
      (export (;2;) "error" (type (eq 1)))
      (type (;3;) (own 0))
      (type (;4;) (result 3 (error 2)))
      (type (;5;) (func (param "identifier" string) (result 4)))
      (export (;0;) "open" (func (type 5)))
    )
  )
  (import "wasi:keyvalue/store@0.2.0-draft" (instance $store (type $store-type)))
  (alias export $store "bucket" (type $bucket))
  (alias export $store "error" (type $error))
  (type $atomics-type
    (instance
      (alias outer 1 $bucket (type (;0;)))
      (export (;1;) "bucket" (type (eq 0)))
      (alias outer 1 $error (type (;2;)))
      (export (;3;) "error" (type (eq 2)))
      (type (;4;) (borrow 1))
      (type (;5;) (result u64 (error 3)))
      (type (;6;) (func (param "bucket" 4) (param "key" string) (param "delta" u64) (result 5)))
      (export (;0;) "increment" (func (type 6)))
    )
  )
  (import "wasi:keyvalue/atomics@0.2.0-draft" (instance $atomics (type $atomics-type)))

  ;; memory and allocator first: the lowered imports need them
  (core module $mem
    (memory (export "memory") 1)
    (global $heap i32 (i32.const 1024))
    (global $next (mut i32) (i32.const 1024))
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
    (func (export "reset") (param i32)
      (global.set $next (global.get $heap)))
  )
  (core instance $mem-i (instantiate $mem))
  (alias core export $mem-i "memory" (core memory $memory))
  (alias core export $mem-i "cabi_realloc" (core func $realloc))
  (alias core export $mem-i "reset" (core func $reset))

  (core func $open
    (canon lower (func $store "open") (memory $memory) (realloc $realloc) string-encoding=utf8))
  (core func $increment
    (canon lower (func $atomics "increment")
      (memory $memory) (realloc $realloc) string-encoding=utf8))
  (core func $drop (canon resource.drop $bucket))

  (core module $main
    (import "mem" "memory" (memory 1))
    (import "kv" "open" (func $open (param i32 i32 i32)))
    (import "kv" "increment" (func $increment (param i32 i32 i32 i64 i32)))
    (import "kv" "drop" (func $drop (param i32)))
    (data (i32.const 64) "no-such-store")
    (data (i32.const 80) "access-denied")

    ;; the export's err(string) from the keyvalue error variant at $at (tag, then string)
    (func $fail (param $at i32) (result i32)
      (local $tag i32)
      (local.set $tag (i32.load8_u (local.get $at)))
      (i32.store8 (i32.const 0) (i32.const 1))
      (if (i32.eq (local.get $tag) (i32.const 2))
        (then
          (i32.store (i32.const 8) (i32.load (i32.add (local.get $at) (i32.const 4))))
          (i32.store (i32.const 12) (i32.load (i32.add (local.get $at) (i32.const 8)))))
        (else
          (i32.store (i32.const 8) (select (i32.const 80) (i32.const 64) (local.get $tag)))
          (i32.store (i32.const 12) (i32.const 13))))
      (i32.const 0))

    (func (export "increment") (param $key i32) (param $len i32) (result i32)
      (local $bucket i32)
      (call $open (i32.const 0) (i32.const 0) (i32.const 128))
      (if (i32.load8_u (i32.const 128))
        (then (return (call $fail (i32.const 132)))))
      (local.set $bucket (i32.load (i32.const 132)))
      (call $increment (local.get $bucket) (local.get $key) (local.get $len) (i64.const 1)
        (i32.const 160))
      (call $drop (local.get $bucket))
      (if (i32.load8_u (i32.const 160))
        (then (return (call $fail (i32.const 168)))))
      (i32.store8 (i32.const 0) (i32.const 0))
      (i64.store (i32.const 8) (i64.load (i32.const 168)))
      (i32.const 0))
  )
  (core instance $main-i
    (instantiate $main
      (with "mem" (instance $mem-i))
      (with "kv" (instance
        (export "open" (func $open))
        (export "increment" (func $increment))
        (export "drop" (func $drop))))))

  (func $counter-increment (param "key" string) (result (result u64 (error string)))
    (canon lift (core func $main-i "increment")
      (memory $memory) (realloc $realloc) string-encoding=utf8 (post-return $reset)))
  (instance $counter (export "increment" (func $counter-increment)))
  (export "lattice:examples/counter@0.1.0" (instance $counter))
)
