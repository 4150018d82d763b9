// Live countdowns for the duty officer's pages (the dashboard and an incident's page).
//
// The page, rendered by the server, already shows every deadline and its state: this script
// only keeps the clocks running.  It reads #live (data-live: the JSON view to poll; data-poll:
// how often, ms; data-now: the server's clock when the page was made; data-words: the phrases
// in the page's language), ticks every second from the SERVER's clock (a phone whose own clock
// is wrong must not show a wrong time left), and asks the server what changed every data-poll
// ms.  When that fails the page says so and the clocks go on from the last known deadlines;
// an ended session asks to sign in again, and an incident no longer found stops the clocks.
// No inline script anywhere: the Content-Security-Policy allows only files from this site.
(function () {
  "use strict";
  var root = document.getElementById("live");
  if (!root) {
    return;
  }
  var source = root.getAttribute("data-live");
  var pollMs = parseInt(root.getAttribute("data-poll"), 10) || 10000;
  var words = JSON.parse(root.getAttribute("data-words"));
  var stamp = root.getAttribute("data-stamp");
  var status = document.getElementById("live-status");
  var SOON_MS = 3600 * 1000;
  // The server's clock minus the browser's: added to Date.now() it gives the server's now.
  var offset = parseInt(root.getAttribute("data-now"), 10) - Date.now();

  // What the server said last about each duty: {state, deadline, live, words, clock}.
  var duties = {};
  Array.prototype.forEach.call(document.querySelectorAll("[data-duty]"), function (el) {
    var state = el.getAttribute("data-state");
    duties[el.getAttribute("data-duty")] = {
      state: state,
      deadline: parseInt(el.getAttribute("data-deadline"), 10),
      live: state === "open" || state === "soon" || state === "overdue"
    };
  });

  // A span of time as the server says it (timeutil.format_duration): 4小时59分钟 / 4 h 59 min.
  function duration(ms) {
    var total = Math.floor(Math.abs(ms) / 1000);
    var days = Math.floor(total / 86400);
    var rest = total;
    if (days < 3) {
      days = 0;
    } else {
      rest = total - days * 86400;
    }
    var hours = Math.floor(rest / 3600);
    var minutes = Math.floor((rest % 3600) / 60);
    var seconds = rest % 60;
    var u = words.units;
    var zh = u[1] === "小时";
    var parts = [];
    [[days, u[0]], [hours, u[1]], [minutes, u[2]]].forEach(function (p) {
      if (p[0]) {
        parts.push(zh ? p[0] + p[1] : p[0] + " " + p[1]);
      }
    });
    if (!parts.length) {
      return zh ? seconds + u[3] : seconds + " " + u[3];
    }
    return parts.join(zh ? "" : " ");
  }

  // Hours:minutes left, or +hours:minutes overdue (console.clock_text).
  function clock(ms) {
    var total = Math.floor(Math.abs(ms) / 1000);
    var minutes = Math.floor(total / 60);
    var mm = String(minutes % 60);
    return (ms > 0 && total > 0 ? "" : "+") + Math.floor(minutes / 60) + ":" + (mm.length < 2 ? "0" + mm : mm);
  }

  function show(id, d, now) {
    var el = document.querySelector('[data-duty="' + id + '"]');
    if (!el) {
      return;
    }
    var state = d.state;
    var text = d.words;
    var time = d.clock || "";
    if (d.live) {
      var left = d.deadline - now;
      state = left > 0 ? (left <= SOON_MS ? "soon" : "open") : "overdue";
      var phrase = state === "overdue" ? words.over : state === "soon" ? words.soon : words.left;
      text = phrase.replace("{d}", duration(left));
      time = clock(left);
    }
    el.className = "duty state-" + state;
    el.setAttribute("data-state", state);
    var c = el.querySelector(".clock");
    var w = el.querySelector(".words");
    if (c && c.textContent !== time) {
      c.textContent = time;
    }
    if (w && w.textContent !== text) {
      w.textContent = text;
    }
  }

  // The server's clock now: one instant for every duty on the page.
  function serverNow() {
    return Date.now() + offset;
  }

  function tick() {
    var now = serverNow();
    Object.keys(duties).forEach(function (id) {
      if (duties[id].live) {
        show(id, duties[id], now);
      }
    });
  }

  function say(text, link) {
    status.textContent = "";
    if (!text) {
      status.hidden = true;
      return;
    }
    if (link) {
      var a = document.createElement("a");
      a.href = link;
      a.textContent = text;
      status.appendChild(a);
    } else {
      status.textContent = text;
    }
    status.hidden = false;
  }

  function apply(data) {
    offset = data.now_ms - Date.now();
    data.duties.forEach(function (d) {
      var known = duties[String(d.id)];
      if (!known) {
        return;
      }
      duties[String(d.id)] = {state: d.state, deadline: d.deadline_ms, live: d.live, words: d.words, clock: d.clock};
      show(String(d.id), duties[String(d.id)], serverNow());
    });
    if (data.stamp !== stamp) {
      say(words.changed, window.location.pathname + window.location.search);
    } else {
      say("");
    }
  }

  // The incident is not found (404 with its code; any other 404 is not ours to explain).
  function gone(r) {
    return r.json().then(function (body) {
      if (!body || body.code !== "incident_not_found") {
        throw new Error("HTTP 404");
      }
      stopped = true;
      window.clearInterval(ticking);
      say(words.gone, "/");
      return null;
    });
  }

  var stopped = false;
  var ticking = null;

  function poll() {
    fetch(source, {credentials: "same-origin", cache: "no-store", headers: {Accept: "application/json"}})
      .then(function (r) {
        if (r.status === 401) {
          say(words.signed_out, "/login?next=" + encodeURIComponent(window.location.pathname));
          return null;
        }
        if (r.status === 404) {
          return gone(r);
        }
        if (!r.ok) {
          throw new Error("HTTP " + r.status);
        }
        return r.json();
      })
      .then(function (data) {
        if (data) {
          apply(data);
        }
      })
      .catch(function () {
        say(words.lost);
      })
      .then(function () {
        if (!stopped) {
          window.setTimeout(poll, pollMs);
        }
      });
  }

  tick();
  ticking = window.setInterval(tick, 1000);
  window.setTimeout(poll, pollMs);
})();
