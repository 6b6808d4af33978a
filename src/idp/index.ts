/** Builds the configured identity provider. One case per `idp.kind`. */
import type { IdpConfig, UsersConfig } from "../config/schema.ts";
import type { Logger } from "../log.ts";
import { AzureIdentityProvider } from "./azure.ts";
import { LdapIdentityProvider } from "./ldap.ts";
import { StaticIdentityProvider } from "./static.ts";
import type { DirectoryRequestObserver, IdentityProvider } from "./types.ts";

export function createIdentityProvider(
  config: IdpConfig,
  users: UsersConfig,
  log: Logger,
  onRequest?: DirectoryRequestObserver,
): IdentityProvider {
  const observe = onRequest === undefined ? {} : { onRequest };
  switch (config.kind) {
    case "static":
      return new StaticIdentityProvider(config.static.file);
    case "ldap":
      return new LdapIdentityProvider({ settings: config.ldap, userAttributes: attributesUsed(users), log: log.child("ldap"), ...observe });
    case "azure":
      return new AzureIdentityProvider({ settings: config.azure, userAttributes: attributesUsed(users), log: log.child("azure"), ...observe });
  }
}

/** The directory attributes the user mapping reads: `users.attribute` and every `{attr:NAME}`. */
export function attributesUsed(users: Pick<UsersConfig, "attribute" | "template">): string[] {
  const names = new Set<string>([users.attribute]);
  for (const m of users.template.matchAll(/\{attr:([^{}]+)\}/g)) if (m[1] !== undefined) names.add(m[1]);
  return [...names];
}
