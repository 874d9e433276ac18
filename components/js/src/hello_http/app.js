// hello_http_js: a standard `wasi:http/proxy` component written in JavaScript.
//
// Built by componentize-js against the unmodified WASI 0.2.12 WIT in components/wit-proxy/
// (world `wasi:http/proxy@0.2.12`). It exports `wasi:http/incoming-handler` by hand (no
// `fetch` event), using the `wasi:http/types` and `wasi:io/streams` imports directly, so the
// same .wasm runs under `wasmtime serve` and under the Lattice host's Python WASI layer.
//
// Routes:
//   GET /       -> 200 "hello from javascript", `x-hello: lattice-js`, text/plain
//   POST /echo  -> 200, the request body streamed back chunk by chunk (never buffered whole),
//                  echoing the request's content type
//   GET /trap   -> throws, which traps the instance; the host answers 500
//   anything else -> 404 "not found"

import {
  Fields,
  OutgoingBody,
  OutgoingResponse,
  ResponseOutparam,
} from "wasi:http/types@0.2.12";

const CHUNK = 64 * 1024;
const encoder = new TextEncoder();

/** Write all of `data` to a wasi:io output-stream, waiting for room as needed. */
function writeAll(stream, data) {
  let offset = 0;
  while (offset < data.length) {
    let room = Number(stream.checkWrite());
    if (room === 0) {
      const ready = stream.subscribe();
      ready.block();
      ready[Symbol.dispose]();
      continue;
    }
    const end = Math.min(data.length, offset + room);
    stream.write(data.subarray(offset, end));
    offset = end;
  }
}

/** Set the response and return its body's output stream plus the body handle. */
function start(responseOut, status, headers) {
  const response = new OutgoingResponse(Fields.fromList(headers));
  response.setStatusCode(status);
  const body = response.body();
  const stream = body.write();
  ResponseOutparam.set(responseOut, { tag: "ok", val: response });
  return { body, stream };
}

/** Flush and close the stream, then finish the body (no trailers). */
function finish({ body, stream }) {
  stream.blockingFlush();
  stream[Symbol.dispose]();
  OutgoingBody.finish(body, undefined);
}

function respond(responseOut, status, headers, text) {
  const all = [["content-type", encoder.encode("text/plain; charset=utf-8")], ...headers];
  const out = start(responseOut, status, all);
  writeAll(out.stream, encoder.encode(text));
  finish(out);
}

function echo(request, responseOut) {
  const contentType = request
    .headers()
    .entries()
    .filter(([name]) => name === "content-type");
  const incoming = request.consume();
  const input = incoming.stream();
  const out = start(responseOut, 200, contentType);
  for (;;) {
    let chunk;
    try {
      chunk = input.blockingRead(BigInt(CHUNK));
    } catch (e) {
      // stream-error: `closed` is the end of the body; anything else is a real failure
      if (e?.payload?.tag === "closed") break;
      throw e;
    }
    writeAll(out.stream, chunk);
  }
  input[Symbol.dispose]();
  finish(out);
}

export const incomingHandler = {
  handle(request, responseOut) {
    const method = request.method().tag;
    const path = request.pathWithQuery() ?? "/";
    if (method === "get" && path === "/") {
      respond(responseOut, 200, [["x-hello", encoder.encode("lattice-js")]], "hello from javascript");
    } else if (method === "post" && path === "/echo") {
      echo(request, responseOut);
    } else if (path === "/trap") {
      throw new Error(`trap requested by ${method.toUpperCase()} /trap`);
    } else {
      respond(responseOut, 404, [], "not found");
    }
  },
};
