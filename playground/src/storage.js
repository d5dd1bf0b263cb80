// A namespaced view of localStorage for GraphiQL.
//
// GraphiQL keeps its tabs under `graphiql:tabState` and ignores `defaultTabs`
// whenever tabs are stored. Other GraphiQL pages on the same origin (or an
// older playground) would therefore hide our example operations. Every key is
// prefixed with `switchyard:<fingerprint of the example operations>:`, so the
// examples show up again whenever operations.json changes; keys of older
// fingerprints are removed on start.

const ROOT = 'switchyard:';

/** 32-bit FNV-1a hash of a string, as 8 hex digits. */
export function fingerprint(text) {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash.toString(16).padStart(8, '0');
}

/** localStorage, or null when the browser refuses it (private mode, sandbox). */
function backingStore() {
  try {
    const store = window.localStorage;
    const probe = `${ROOT}probe`;
    store.setItem(probe, '1');
    store.removeItem(probe);
    return store;
  } catch {
    return null;
  }
}

/** A `Storage` (getItem/setItem/removeItem/clear/length) whose keys all start with `prefix`. */
function prefixed(store, prefix) {
  const ownKeys = () => {
    const keys = [];
    for (let i = 0; i < store.length; i++) {
      const key = store.key(i);
      if (key !== null && key.startsWith(prefix)) keys.push(key);
    }
    return keys;
  };
  return {
    getItem: (key) => store.getItem(prefix + key),
    setItem: (key, value) => store.setItem(prefix + key, value),
    removeItem: (key) => store.removeItem(prefix + key),
    clear: () => ownKeys().forEach((key) => store.removeItem(key)),
    get length() {
      return ownKeys().length;
    },
  };
}

/** An in-memory `Storage`, used when localStorage is unavailable. */
function memory() {
  const map = new Map();
  return {
    getItem: (key) => (map.has(key) ? map.get(key) : null),
    setItem: (key, value) => void map.set(key, String(value)),
    removeItem: (key) => void map.delete(key),
    clear: () => map.clear(),
    get length() {
      return map.size;
    },
  };
}

/**
 * Creates the storage for GraphiQL, namespaced by `version` (a fingerprint of the
 * default tabs), and drops whatever older versions left behind.
 */
export function createPlaygroundStorage(version) {
  const store = backingStore();
  if (!store) return memory();
  const prefix = `${ROOT}${version}:`;
  try {
    const stale = [];
    for (let i = 0; i < store.length; i++) {
      const key = store.key(i);
      if (key !== null && key.startsWith(ROOT) && !key.startsWith(prefix)) stale.push(key);
    }
    stale.forEach((key) => store.removeItem(key));
  } catch {
    // Cleaning up is best effort.
  }
  return prefixed(store, prefix);
}
