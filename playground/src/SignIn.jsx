// Demo sign-in: pick a demo user, get a token from the development server and put
// it in the header editor as `{"Authorization": "Bearer <jwt>"}`.
//
// GET /dev/users lists the users; a 404 means a real deployment without demo
// sign-in, and the controls stay hidden. POST /dev/token {"user": id} answers
// {"access_token", "token_type", "expires_in"}.
import { useEffect, useRef, useState } from 'react';
import { createPortal } from 'react-dom';
import { useGraphiQL, useGraphiQLActions } from '@graphiql/react';
import { authorizationOf, withAuthorization } from './headers.js';
import { expose } from './api.js';

/** A one-line description of a failed response: status, plus the error from its body. */
async function describeFailure(response) {
  let detail = '';
  try {
    const text = (await response.text()).trim();
    try {
      const body = JSON.parse(text);
      detail = body.error_description || body.error || body.message || text;
    } catch {
      detail = text;
    }
  } catch {
    // No body to show.
  }
  const status = `${response.status} ${response.statusText}`.trim();
  return detail ? `${status}: ${String(detail).slice(0, 200)}` : status;
}

/** "Ada Lovelace — customer" */
function label(user) {
  const name = user.name || user.id;
  return user.role ? `${name} \u2014 ${user.role}` : name;
}

/** The sign-in controls, rendered (through a portal) into `container`, the page header. */
export function SignIn({ container }) {
  const headerEditor = useGraphiQL((s) => s.headerEditor);
  const { updateActiveTabValues } = useGraphiQLActions();
  // Sets the header editor and the active tab's stored headers together: GraphiQL copies the
  // editor into the tab only after a debounce, and re-selecting the tab before that would
  // bring back the old headers.
  function setHeaders(value) {
    headerEditor.setValue(value);
    updateActiveTabValues({ headers: value });
  }
  const activeTabIndex = useGraphiQL((s) => s.activeTabIndex);
  // loading | disabled (404) | failed | ready
  const [users, setUsers] = useState({ state: 'loading', list: [] });
  // The signed-in user and the Authorization value, or null.
  const [session, setSession] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const selectRef = useRef(null);

  useEffect(() => {
    let cancelled = false;
    (async () => {
      let next;
      try {
        const response = await fetch('/dev/users', { headers: { accept: 'application/json' } });
        if (response.status === 404) {
          next = { state: 'disabled', list: [] };
        } else {
          if (!response.ok) throw new Error(await describeFailure(response));
          const list = await response.json();
          if (!Array.isArray(list)) throw new Error('the answer is not a JSON array');
          next = { state: 'ready', list: list.filter((u) => u && typeof u.id === 'string') };
        }
      } catch (e) {
        next = { state: 'failed', list: [], message: `Demo users unavailable: ${e.message}` };
      }
      if (!cancelled) setUsers(next);
    })();
    return () => {
      cancelled = true;
    };
  }, []);

  /** Signs in as `userId`; resolves to the user, or rejects (and shows the error). */
  async function signIn(userId) {
    const user = users.list.find((u) => u.id === userId) ?? { id: userId, name: userId };
    setBusy(true);
    setError(null);
    try {
      if (!headerEditor) throw new Error('the header editor is not ready yet');
      const response = await fetch('/dev/token', {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify({ user: userId }),
      });
      if (!response.ok) throw new Error(await describeFailure(response));
      let body;
      try {
        body = await response.json();
      } catch {
        throw new Error('the answer is not JSON');
      }
      const token = body && body.access_token;
      if (typeof token !== 'string' || token === '') throw new Error('the answer has no access_token');
      const authorization = `Bearer ${token}`;
      setHeaders(withAuthorization(headerEditor.getValue(), authorization));
      if (selectRef.current && users.list.some((u) => u.id === userId)) selectRef.current.value = userId;
      setSession({ user, authorization });
      return user;
    } catch (e) {
      setError(`Sign-in as ${user.name} failed: ${e.message}`);
      throw e;
    } finally {
      setBusy(false);
    }
  }

  function signOut() {
    setSession(null);
    setError(null);
    if (headerEditor) setHeaders(withAuthorization(headerEditor.getValue(), undefined));
  }

  // Each tab has its own headers: carry the signed-in bearer over to the tab
  // that becomes active (including new tabs).
  useEffect(() => {
    if (!session || !headerEditor) return;
    const current = headerEditor.getValue();
    if (authorizationOf(current) !== session.authorization) {
      setHeaders(withAuthorization(current, session.authorization));
    }
  }, [activeTabIndex, headerEditor, session]);

  // The scripting API always calls the latest closure.
  const latest = useRef(null);
  latest.current = { signIn, users, session };
  useEffect(() => {
    expose({
      /** 'loading' | 'disabled' | 'failed' | 'ready' */
      signInState: () => latest.current.users.state,
      signIn: (userId) => latest.current.signIn(userId),
      signedInAs: () => latest.current.session?.user.name ?? null,
    });
  }, []);

  // Rendered only once the header editor exists, so that a visible "Sign in"
  // button always works.
  if (!container || !headerEditor || users.state === 'loading' || users.state === 'disabled') {
    return null;
  }

  const content =
    users.state === 'failed' ? (
      <span id="sign-in-error" className="sy-error" role="alert">
        {users.message}
      </span>
    ) : (
      <>
        <label className="sy-label" htmlFor="demo-user">
          Demo user
        </label>
        <select id="demo-user" ref={selectRef} defaultValue={users.list[0]?.id} disabled={busy}>
          {users.list.map((u) => (
            <option key={u.id} value={u.id}>
              {label(u)}
            </option>
          ))}
        </select>
        <button
          id="sign-in"
          type="button"
          disabled={busy || users.list.length === 0}
          onClick={() => signIn(selectRef.current?.value ?? '').catch(() => {})}
        >
          Sign in
        </button>
        {session && (
          <>
            <span id="signed-in-as" className="sy-signed-in" title={session.user.id}>
              Signed in as {session.user.name}
              {session.user.role ? ` (${session.user.role})` : ''}
            </span>
            <button id="sign-out" type="button" onClick={signOut} disabled={busy}>
              Sign out
            </button>
          </>
        )}
        {error && (
          <span id="sign-in-error" className="sy-error" role="alert">
            {error}
          </span>
        )}
      </>
    );
  return createPortal(content, container);
}
