;; The minimal HTTP hello: a standard `wasi:http/proxy` component with no language runtime.
;;
;; A core module in WAT, embedded with the unmodified WASI 0.2.12 WIT (world
;; `wasi:http/proxy@0.2.12`, components/wit-proxy) and made a component by
;; `wasm-tools component new`, so it runs under `wasmtime serve` as under the host. Every
;; request gets 200 `hello from wat` with `content-type: text/plain` and `x-hello: lattice`
;; (the headers bench http's plain aiohttp sends), whatever its method and path: `bench
;; http` compares it with hello_http to tell the host's cost from the guest's.
;;
;; Memory: 0..32 return areas, 64.. the fixed texts, heap from 1024 for cabi_realloc
;; (nothing here is lowered into the guest but the result areas).
(module
  (import "wasi:http/types@0.2.12" "[constructor]fields" (func $fields (result i32)))
  (import "wasi:http/types@0.2.12" "[method]fields.append"
    (func $append (param i32 i32 i32 i32 i32 i32)))
  (import "wasi:http/types@0.2.12" "[constructor]outgoing-response"
    (func $response (param i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-response.body"
    (func $body (param i32 i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-body.write"
    (func $write (param i32 i32)))
  (import "wasi:http/types@0.2.12" "[static]outgoing-body.finish"
    (func $finish (param i32 i32 i32 i32)))
  (import "wasi:http/types@0.2.12" "[static]response-outparam.set"
    (func $set (param i32 i32 i32 i32 i64 i32 i32 i32 i32)))
  (import "wasi:http/types@0.2.12" "[resource-drop]incoming-request"
    (func $drop-request (param i32)))
  (import "wasi:io/streams@0.2.12" "[method]output-stream.blocking-write-and-flush"
    (func $write-flush (param i32 i32 i32 i32)))
  (import "wasi:io/streams@0.2.12" "[resource-drop]output-stream"
    (func $drop-stream (param i32)))

  (memory (export "memory") 1)
  (data (i32.const 64) "hello from wat")          ;; 14 bytes
  (data (i32.const 80) "content-type")            ;; 12
  (data (i32.const 96) "text/plain")              ;; 10
  (data (i32.const 112) "x-hello")                ;; 7
  (data (i32.const 120) "lattice")                ;; 7

  (global $next (mut i32) (i32.const 1024))
  (func (export "cabi_realloc") (param i32 i32) (param $align i32) (param $size i32)
    (result i32)
    (local $ptr i32)
    (local.set $ptr
      (i32.and
        (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (global.set $next (i32.add (local.get $ptr) (local.get $size)))
    (if (i32.gt_u (global.get $next) (i32.shl (memory.size) (i32.const 16)))
      (then unreachable))
    (local.get $ptr))

  ;; a result<own<T>, _> at 0: its handle, or a trap when it is an error
  (func $ok-handle (result i32)
    (if (i32.load8_u (i32.const 0)) (then unreachable))
    (i32.load (i32.const 4)))

  (func (export "wasi:http/incoming-handler@0.2.12#handle") (param $request i32) (param $out i32)
    (local $headers i32) (local $resp i32) (local $body i32) (local $stream i32)
    (global.set $next (i32.const 1024))
    (call $drop-request (local.get $request))
    (local.set $headers (call $fields))
    (call $append (local.get $headers) (i32.const 80) (i32.const 12) (i32.const 96)
      (i32.const 10) (i32.const 0))
    (if (i32.load8_u (i32.const 0)) (then unreachable))
    (call $append (local.get $headers) (i32.const 112) (i32.const 7) (i32.const 120)
      (i32.const 7) (i32.const 0))
    (if (i32.load8_u (i32.const 0)) (then unreachable))
    (local.set $resp (call $response (local.get $headers)))
    (call $body (local.get $resp) (i32.const 0))
    (local.set $body (call $ok-handle))
    ;; send the head first (ok(response)), then the body
    (call $set (local.get $out) (i32.const 0) (local.get $resp) (i32.const 0) (i64.const 0)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))
    (call $write (local.get $body) (i32.const 0))
    (local.set $stream (call $ok-handle))
    (call $write-flush (local.get $stream) (i32.const 64) (i32.const 14) (i32.const 0))
    (if (i32.load8_u (i32.const 0)) (then unreachable))
    (call $drop-stream (local.get $stream))
    (call $finish (local.get $body) (i32.const 0) (i32.const 0) (i32.const 0))
    (if (i32.load8_u (i32.const 0)) (then unreachable)))
)
