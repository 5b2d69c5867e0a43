// binwatch console: live updates over Server-Sent Events (GET /events). No framework, no build step.
(function () {
  "use strict";
  var body = document.body;
  var page = body.dataset.page;
  var filters = body.dataset.filters || "";
  var live = document.getElementById("live");

  function fetchText(url) {
    return fetch(url, { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      if (r.status === 401) { window.location.reload(); return null; }
      if (r.status === 204 || r.status === 404) { return ""; }
      if (!r.ok) { throw new Error(url + ": HTTP " + r.status); }
      return r.text();
    });
  }

  function rowsFrom(html) {
    var tpl = document.createElement("template");
    tpl.innerHTML = html;
    return Array.prototype.slice.call(tpl.content.querySelectorAll("tr"));
  }

  function withFilters(path) {
    return filters ? path + "?" + filters : path;
  }

  // -- feed ----------------------------------------------------------------------------------
  function findRow(id) {
    return document.querySelector('#feed-rows tr[data-alert-id="' + id + '"]');
  }

  function updateEmpty() {
    var empty = document.getElementById("feed-empty");
    var tbody = document.getElementById("feed-rows");
    if (empty && tbody) { empty.hidden = tbody.querySelector("tr") !== null; }
  }

  // One fetch per row at a time; an event that comes while it is in flight (the snapshot right
  // after its alert) fetches the row again when it returns, so the later state always wins.
  var inflight = {};

  function refreshRow(id, insertIfNew) {
    var tbody = document.getElementById("feed-rows");
    if (!tbody) { return; }
    var pending = inflight[id];
    if (pending) {
      pending.again = true;
      pending.insert = pending.insert || insertIfNew;
      return;
    }
    if (!insertIfNew && !findRow(id)) { return; }
    var state = inflight[id] = { again: false, insert: insertIfNew };
    fetchText(withFilters("/feed/row/" + encodeURIComponent(id))).then(function (html) {
      if (html === null) { return; }
      var old = findRow(id);
      var rows = rowsFrom(html || "");
      if (!rows.length) {
        if (old) { old.remove(); }
      } else if (old) {
        if (old.classList.contains("fresh")) { rows[0].classList.add("fresh"); }
        old.replaceWith(rows[0]);
      } else if (state.insert) {
        rows[0].classList.add("fresh");
        tbody.insertBefore(rows[0], tbody.firstChild);
      }
      updateEmpty();
    }).catch(function (e) { console.warn(e); }).then(function () {
      delete inflight[id];
      if (state.again) { refreshRow(id, state.insert); }
    });
  }

  function reloadFeed() {
    var tbody = document.getElementById("feed-rows");
    if (!tbody) { return; }
    fetchText(withFilters("/feed/rows")).then(function (html) {
      if (html === null) { return; }
      tbody.replaceChildren.apply(tbody, rowsFrom(html));
      updateEmpty();
    }).catch(function (e) { console.warn(e); });
  }

  // -- alert page ----------------------------------------------------------------------------
  var alertId = body.dataset.alertId;

  function showSnapshot() {
    var missing = document.getElementById("snapshot-missing");
    if (!missing) { return; }
    var img = document.createElement("img");
    img.id = "snapshot";
    img.alt = "snapshot";
    img.src = "/alerts/" + alertId + "/snapshot?t=" + Date.now();
    missing.replaceWith(img);
  }

  function reloadHistory() {
    var box = document.getElementById("history");
    if (!box) { return; }
    fetchText("/alerts/" + alertId + "/history").then(function (html) {
      if (html) { box.innerHTML = html; }
    }).catch(function (e) { console.warn(e); });
  }

  // -- fleet ---------------------------------------------------------------------------------
  var fleetTimer = null;
  function reloadFleet() {
    if (fleetTimer !== null) { return; }
    fleetTimer = setTimeout(function () {
      fleetTimer = null;
      var tbody = document.getElementById("fleet-rows");
      if (!tbody) { return; }
      fetchText("/fleet/rows").then(function (html) {
        if (html === null) { return; }
        tbody.replaceChildren.apply(tbody, rowsFrom(html));
        var empty = document.getElementById("fleet-empty");
        if (empty) { empty.hidden = tbody.querySelector("tr") !== null; }
      }).catch(function (e) { console.warn(e); });
    }, 300);
  }

  // -- every page ----------------------------------------------------------------------------
  function setBroker(data) {
    var banner = document.getElementById("broker-banner");
    if (!banner) { return; }
    banner.hidden = !!data.connected;
    var err = document.getElementById("broker-error");
    if (err) { err.textContent = data.error ? ": " + data.error : ""; }
  }

  function resync() {
    if (page === "feed") { reloadFeed(); }
    if (page === "alert") { reloadHistory(); }
    if (page === "fleet") { reloadFleet(); }
  }

  // One stream per visible tab: a hidden tab closes its stream (browsers allow only ~6 HTTP/1.1
  // connections per server, and each open stream holds one) and catches up when shown again.
  var source = null;
  var broken = false;
  var handlers = {
    alert: function (d) { if (page === "feed" && d.alert_id) { refreshRow(d.alert_id, true); } },
    snapshot: function (d) {
      if (page === "feed" && d.alert_id) { refreshRow(d.alert_id, false); }
      if (page === "alert" && d.alert_id === alertId) { showSnapshot(); }
    },
    review: function (d) {
      if (page === "feed" && d.alert_id) { refreshRow(d.alert_id, false); }
      if (page === "alert" && d.alert_id === alertId) { reloadHistory(); }
    },
    device: function () { if (page === "fleet") { reloadFleet(); } },
    broker: setBroker,
    resync: resync
  };

  function connect() {
    source = new EventSource("/events");
    source.onopen = function () {
      if (live) { live.classList.add("on"); live.title = "live updates: connected"; }
      if (broken) { broken = false; resync(); }  // events were missed while the stream was down
    };
    source.onerror = function () {
      broken = true;
      if (live) { live.classList.remove("on"); live.title = "live updates: reconnecting"; }
      if (source !== null && source.readyState === EventSource.CLOSED) {
        source = null;  // refused (e.g. 401: the login expired): the browser will not retry by itself
        retryLater();
      }
    };
    Object.keys(handlers).forEach(function (kind) {
      source.addEventListener(kind, function (ev) {
        var data = {};
        try { data = JSON.parse(ev.data || "{}"); } catch (e) { console.warn(e); }
        handlers[kind](data);
      });
    });
  }

  function retryLater() {
    setTimeout(function () {
      // a protected URL: 401 reloads the page (to the login form); a server still down: try again
      fetchText("/feed/rows?limit=1").then(function (text) {
        if (text !== null && source === null && !document.hidden) { connect(); }
      }, retryLater);
    }, 5000);
  }

  function disconnect() {
    if (source !== null) { source.close(); source = null; broken = true; }
    if (live) { live.classList.remove("on"); live.title = "live updates: paused (tab hidden)"; }
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) { disconnect(); } else if (source === null) { connect(); }
  });
  window.addEventListener("pagehide", disconnect);
  window.addEventListener("pageshow", function () { if (source === null && !document.hidden) { connect(); } });
  if (!document.hidden) { connect(); }
  if (page === "fleet") { setInterval(reloadFleet, 30000); }  // "last seen" ages
})();
