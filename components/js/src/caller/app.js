// caller_js: the JavaScript twin of components/src/caller (componentize-js).
//
// Imports `lattice:examples/greet` and exports `lattice:examples/relay`
// (components/wit/linked.wit, world `caller-world`): each relay call is forwarded to
// whatever component the lattice link names, in any language.

import { hello, shout } from "lattice:examples/greet@0.1.0";

export const relay = {
  relayHello(name) {
    return hello(name);
  },

  /**
   * `result<string, string>` both ways: the import throws a ComponentError whose
   * `payload` is the err string, and throwing that string from here returns it as err.
   */
  relayShout(words) {
    try {
      return shout(words);
    } catch (e) {
      if (e !== null && typeof e === "object" && "payload" in e) {
        throw e.payload;
      }
      throw e;
    }
  },
};
