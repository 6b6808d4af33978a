"use strict";
// matrix-bot-sdk requires @matrix-org/matrix-sdk-crypto-nodejs at import time, and that
// package loads a native binary that its postinstall downloads from GitHub. Offline the
// download fails and every import of the SDK crashes. This package stands in for the
// missing platform binary: where the real download succeeded, the real binary is loaded
// first and this one is never used.
const UNAVAILABLE = "end-to-end encryption unavailable: the native matrix-sdk-crypto module is not installed";

function unavailableClass(name) {
  const cls = function () {
    throw new Error(`${UNAVAILABLE} (${name})`);
  };
  Object.defineProperty(cls, "name", { value: name });
  return new Proxy(cls, {
    get(target, prop) {
      if (prop in target) return target[prop];
      if (typeof prop === "symbol") return undefined;
      return () => {
        throw new Error(`${UNAVAILABLE} (${name}.${prop})`);
      };
    },
  });
}

const enums = {
  EncryptionAlgorithm: { OlmV1Curve25519AesSha2: 0, MegolmV1AesSha2: 1 },
  ShieldColor: { Red: 0, Grey: 1, None: 2 },
  HistoryVisibility: { Invited: 0, Joined: 1, Shared: 2, WorldReadable: 3 },
  DeviceKeyAlgorithmName: { Ed25519: 0, Curve25519: 1, SignedCurve25519: 2, Unknown: 3 },
  StoreType: { Sled: 0, Sqlite: 1 },
  RequestType: { KeysUpload: 0, KeysQuery: 1, KeysClaim: 2, ToDevice: 3, SignatureUpload: 4, RoomMessage: 5, KeysBackup: 6 },
};

module.exports = new Proxy(enums, {
  get(target, prop) {
    if (prop in target) return target[prop];
    if (typeof prop === "symbol" || prop === "__esModule" || prop === "then") return undefined;
    if (prop === "getVersions") return () => ({ vodozemac: "unavailable", matrix_sdk_crypto: "unavailable" });
    const cls = unavailableClass(String(prop));
    target[prop] = cls;
    return cls;
  },
});
