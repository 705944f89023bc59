// leaflet.markercluster is a classic plugin that extends the global `L`; an ES-module
// build of Leaflet does not create that global, so set it before the plugin loads
// (imports run in order).
import L from "leaflet";

(window as unknown as { L: typeof L }).L = L;
