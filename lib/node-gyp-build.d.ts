// Type declaration for node-gyp-build (the package ships none): returns the addon's exports.
declare module 'node-gyp-build' {
  function load(root: string): unknown;
  export = load;
}
