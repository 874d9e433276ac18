;; An HTTP handler that computes for a while before it answers: the loop-exchange tests'
;; long guest. A standard `wasi:http/proxy` component with no language runtime (built as
;; hello_min is). Every request spins 400,000,000 iterations (~0.1-0.5 s of wasm, well
;; past the loop's 10 ms budget) and then gets 200 with an empty body. Its imports are
;; only wasi:http/types, so its exchanges may start on the event loop.
;;
;; Memory: 0..16 the return area; nothing is lowered into the guest but results.
(module
  (import "wasi:http/types@0.2.12" "[constructor]fields" (func $fields (result i32)))
  (import "wasi:http/types@0.2.12" "[constructor]outgoing-response"
    (func $response (param i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-response.body"
    (func $body (param i32 i32)))
  (import "wasi:http/types@0.2.12" "[static]outgoing-body.finish"
    (func $finish (param i32 i32 i32 i32)))
  (import "wasi:http/types@0.2.12" "[static]response-outparam.set"
    (func $set (param i32 i32 i32 i32 i64 i32 i32 i32 i32)))
  (import "wasi:http/types@0.2.12" "[resource-drop]incoming-request"
    (func $drop-request (param i32)))

  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) unreachable)

  (func (export "wasi:http/incoming-handler@0.2.12#handle") (param $request i32) (param $out i32)
    (local $resp i32) (local $body i32) (local $n i32)
    (call $drop-request (local.get $request))
    (local.set $n (i32.const 400000000))
    (loop $spin
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br_if $spin (local.get $n)))
    (local.set $resp (call $response (call $fields)))
    (call $body (local.get $resp) (i32.const 0))
    (if (i32.load8_u (i32.const 0)) (then unreachable))
    (local.set $body (i32.load (i32.const 4)))
    (call $set (local.get $out) (i32.const 0) (local.get $resp) (i32.const 0) (i64.const 0)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))
    (call $finish (local.get $body) (i32.const 0) (i32.const 0) (i32.const 0))
    (if (i32.load8_u (i32.const 0)) (then unreachable)))
)
