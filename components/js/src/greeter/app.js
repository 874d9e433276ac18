// greeter_js: the JavaScript twin of components/src/greeter (componentize-js).
//
// Exports `lattice:examples/greet` (components/wit/linked.wit, world `greeter-world`).
// Answers are marked "(js)" so a test can tell which language served a call.

export const greet = {
  /** "Hello, {name}! (js)" */
  hello(name) {
    return `Hello, ${name}! (js)`;
  },

  /**
   * The words uppercased and joined with spaces. `result<string, string>`: a returned
   * value is `ok`, a thrown value is `err` (componentize-js's result convention).
   */
  shout(words) {
    if (words.length === 0) {
      throw "nothing to shout";
    }
    return words.map((w) => w.toUpperCase()).join(" ");
  },
};
