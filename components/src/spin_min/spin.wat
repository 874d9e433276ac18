;; A call whose length the caller picks: `spin(n)` counts n down and returns n, with no
;; language runtime and no imports. Short calls prove an export fit for the event loop,
;; a long one shows a loop call stopped at its budget and run again on a worker
;; (tests/test_loop_calls.py).
(component
  (core module $m
    (func (export "spin") (param $n i32) (result i32)
      (local $i i32)
      (local.set $i (local.get $n))
      (block $done
        (loop $again
          (br_if $done (i32.eqz (local.get $i)))
          (local.set $i (i32.sub (local.get $i) (i32.const 1)))
          (br $again)))
      (local.get $n)))
  (core instance $i (instantiate $m))
  (func $spin (param "n" u32) (result u32) (canon lift (core func $i "spin")))
  (instance $spin-iface (export "spin" (func $spin)))
  (export "lattice:examples/spin@0.1.0" (instance $spin-iface))
)
