/**
 * Builds the configured identity provider. One case per `idp.kind`. The LDAP and Azure
 * modules (ldapts, @azure/identity, the Graph client) are loaded only when configured: a
 * command-line run does not pay for the clients it does not use.
 */
import type { IdpConfig, UsersConfig } from "../config/schema.ts";
import type { Logger } from "../log.ts";
import { StaticIdentityProvider } from "./static.ts";
import type { DirectoryRequestObserver, IdentityProvider } from "./types.ts";

export async function createIdentityProvider(
  config: IdpConfig,
  users: UsersConfig,
  log: Logger,
  onRequest?: DirectoryRequestObserver,
): Promise<IdentityProvider> {
  const observe = onRequest === undefined ? {} : { onRequest };
  switch (config.kind) {
    case "static":
      return new StaticIdentityProvider(config.static.file);
    case "ldap": {
      const { LdapIdentityProvider } = await import("./ldap.ts");
      return new LdapIdentityProvider({ settings: config.ldap, userAttributes: attributesUsed(users), log: log.child("ldap"), ...observe });
    }
    case "azure": {
      const { AzureIdentityProvider } = await import("./azure.ts");
      return new AzureIdentityProvider({ settings: config.azure, userAttributes: attributesUsed(users), log: log.child("azure"), ...observe });
    }
  }
}

/** The directory attributes the user mapping reads: `users.attribute` and every `{attr:NAME}`. */
export function attributesUsed(users: Pick<UsersConfig, "attribute" | "template">): string[] {
  const names = new Set<string>([users.attribute]);
  for (const m of users.template.matchAll(/\{attr:([^{}]+)\}/g)) if (m[1] !== undefined) names.add(m[1]);
  return [...names];
}
