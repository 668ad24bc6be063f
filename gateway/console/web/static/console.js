// DSTM gateway console: the live numbers of the operator pages. Every 2 s it reads
// /ops/live.json and writes the display values the server formatted into the elements
// that name them: data-stat="…" (totals), and data-field="…" inside tr[data-session]
// and tr[data-pool]. Sessions that ended are struck through; new ones are announced.
(function () {
  'use strict';
  if (!document.querySelector('[data-live]')) {
    return;
  }
  var note = document.getElementById('live-note');
  function setFields(row, fields) {
    row.querySelectorAll('[data-field]').forEach(function (cell) {
      var v = fields[cell.getAttribute('data-field')];
      if (v !== undefined && cell.textContent !== v) {
        cell.textContent = v;
      }
    });
  }
  function rows(attr) {
    var m = {};
    document.querySelectorAll('tr[' + attr + ']').forEach(function (r) { m[r.getAttribute(attr)] = r; });
    return m;
  }
  function update(d) {
    document.querySelectorAll('[data-stat]').forEach(function (el) {
      var v = d.stats[el.getAttribute('data-stat')];
      if (v !== undefined) {
        el.textContent = v;
      }
    });
    var shown = rows('data-session'), fresh = 0;
    (d.sessions || []).forEach(function (s) {
      var row = shown[s.id];
      if (!row) {
        fresh++;
        return;
      }
      delete shown[s.id];
      row.classList.remove('gone');
      setFields(row, s.fields);
    });
    Object.keys(shown).forEach(function (id) { shown[id].classList.add('gone'); });
    var pools = rows('data-pool');
    (d.pools || []).forEach(function (p) {
      if (pools[p.name]) {
        setFields(pools[p.name], p.fields);
      }
    });
    if (note) {
      note.textContent = fresh > 0 ? fresh + ' new session(s): reload the page to see them.' : '';
    }
    document.body.setAttribute('data-live-updated', d.time);
  }
  function poll() {
    fetch('/ops/live.json', { credentials: 'same-origin', cache: 'no-store' })
      .then(function (r) {
        if (!r.ok) {
          throw new Error('HTTP ' + r.status);
        }
        return r.json();
      })
      .then(update)
      .catch(function (e) {
        if (note) {
          note.textContent = 'Live numbers unavailable (' + e.message + ').';
        }
      });
  }
  poll();
  setInterval(poll, 2000);
}());
