// Dolly's web view: keeps <main> current. The server renders every page; on each "change" event from
// /ui/events this fetches the same page as a fragment and swaps it in. No library, nothing inline.
(function () {
  'use strict';
  var main = document.getElementById('main');
  var live = document.getElementById('live');
  if (!main || !live || !window.EventSource) {
    return;
  }

  var busy = false;
  var again = false;

  function state(text, on) {
    live.textContent = text;
    live.className = on ? 'live on' : 'live off';
  }

  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    var url = new URL(window.location.href);
    url.searchParams.set('fragment', '1');
    fetch(url.toString(), { credentials: 'same-origin', cache: 'no-store' })
      .then(function (response) {
        if (!response.ok) {
          state(response.status === 401 ? 'logged out' : 'error ' + response.status, false);
          return null;
        }
        var version = response.headers.get('X-Dolly-Version');
        return response.text().then(function (html) {
          main.innerHTML = html;
          if (version) {
            main.dataset.version = version;
          }
        });
      })
      .catch(function () { state('offline', false); })
      .then(function () {
        busy = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }

  var events = new EventSource('/ui/events');
  events.addEventListener('change', function (e) {
    if (e.data !== main.dataset.version) {
      refresh();
    }
  });
  events.onopen = function () { state('live', true); };
  events.onerror = function () { state('reconnecting', false); };
})();
