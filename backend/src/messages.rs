//! Every user-facing text of the service, in English, Spanish and French.

use edge_contract::problem::{self as types, ProblemType};

use crate::i18n::Text;
use crate::problem::{Expected, Kind, Reason};

/// A problem kind's type (slug and status, from the contract's catalogue), title and detail.
pub(crate) struct Spec {
    pub problem: ProblemType,
    pub title: Text,
    pub detail: Text,
}

/// The type and texts of a problem kind.
pub(crate) fn kind(kind: Kind) -> Spec {
    use Kind::*;
    let (problem, title, detail) = match kind {
        ValidationFailed => (types::VALIDATION_FAILED,
            Text { en: "Invalid request", es: "Solicitud no válida", fr: "Requête invalide" },
            Text { en: "One or more fields are invalid; see errors.", es: "Uno o más campos no son válidos; consulte errors.", fr: "Un ou plusieurs champs sont invalides ; voir errors." }),
        MalformedBody => (types::MALFORMED_BODY,
            Text { en: "Malformed body", es: "Cuerpo mal formado", fr: "Corps mal formé" },
            Text { en: "The request body could not be parsed as {}.", es: "No se pudo interpretar el cuerpo de la solicitud como {}.", fr: "Le corps de la requête n'a pas pu être lu comme {}." }),
        InvalidIdempotencyKey => (types::INVALID_IDEMPOTENCY_KEY,
            Text { en: "Invalid Idempotency-Key", es: "Idempotency-Key no válida", fr: "Idempotency-Key invalide" },
            Text { en: "Idempotency-Key must be sent once, as 1 to 255 visible ASCII characters other than '\"', '\\' and ','.", es: "Idempotency-Key debe enviarse una vez, con 1 a 255 caracteres ASCII visibles distintos de '\"', '\\' y ','.", fr: "Idempotency-Key doit être envoyée une fois, avec 1 à 255 caractères ASCII visibles autres que '\"', '\\' et ','." }),
        InvalidQuery => (types::INVALID_QUERY,
            Text { en: "Invalid query", es: "Consulta no válida", fr: "Requête de recherche invalide" },
            Text { en: "One or more query parameters are invalid; see errors.", es: "Uno o más parámetros de consulta no son válidos; consulte errors.", fr: "Un ou plusieurs paramètres de requête sont invalides ; voir errors." }),
        CompanyRequired => (types::COMPANY_REQUIRED,
            Text { en: "Company unknown", es: "Empresa desconocida", fr: "Entreprise inconnue" },
            Text { en: "Your token names several organizations but no company; ask for a token with a company claim.", es: "Su token nombra varias organizaciones pero ninguna empresa; solicite un token con la reclamación company.", fr: "Votre jeton nomme plusieurs organisations mais aucune entreprise ; demandez un jeton avec la revendication company." }),
        InvalidHeader => (types::INVALID_HEADER,
            Text { en: "Invalid header", es: "Encabezado no válido", fr: "En-tête invalide" },
            Text { en: "The value of the {} header is not valid text.", es: "El valor del encabezado {} no es un texto válido.", fr: "La valeur de l'en-tête {} n'est pas un texte valide." }),
        Unauthenticated => (types::UNAUTHENTICATED,
            Text { en: "Unauthenticated", es: "No autenticado", fr: "Non authentifié" },
            Text { en: "The request did not carry a valid identity from the gateway.", es: "La solicitud no llevaba una identidad válida de la pasarela.", fr: "La requête ne portait pas d'identité valide de la passerelle." }),
        Forbidden => (types::FORBIDDEN,
            Text { en: "Forbidden", es: "Prohibido", fr: "Interdit" },
            Text { en: "You do not have the permission {} in this organization.", es: "No tiene el permiso {} en esta organización.", fr: "Vous n'avez pas la permission {} dans cette organisation." }),
        CreationDisabled => (types::WORKSPACE_CREATION_DISABLED,
            Text { en: "Workspace creation disabled", es: "Creación de espacios de trabajo desactivada", fr: "Création d'espaces de travail désactivée" },
            Text { en: "Standard users of this company are not allowed to create workspaces.", es: "Los usuarios estándar de esta empresa no pueden crear espacios de trabajo.", fr: "Les utilisateurs standard de cette entreprise ne peuvent pas créer d'espaces de travail." }),
        NotFound => (types::NOT_FOUND,
            Text { en: "Not found", es: "No encontrado", fr: "Introuvable" },
            Text { en: "No resource exists at this path, or it is not visible to you.", es: "No existe ningún recurso en esta ruta, o no es visible para usted.", fr: "Aucune ressource n'existe à ce chemin, ou elle ne vous est pas visible." }),
        MethodNotAllowed => (types::METHOD_NOT_ALLOWED,
            Text { en: "Method not allowed", es: "Método no permitido", fr: "Méthode non autorisée" },
            Text { en: "This resource accepts only: {}.", es: "Este recurso solo acepta: {}.", fr: "Cette ressource n'accepte que : {}." }),
        IdempotencyInFlight => (types::IDEMPOTENCY_KEY_IN_USE,
            Text { en: "Request in progress", es: "Solicitud en curso", fr: "Requête en cours" },
            Text { en: "A request with this Idempotency-Key is still being processed; retry later.", es: "Una solicitud con esta Idempotency-Key aún se está procesando; reintente más tarde.", fr: "Une requête avec cette Idempotency-Key est encore en cours de traitement ; réessayez plus tard." }),
        PayloadTooLarge => (types::PAYLOAD_TOO_LARGE,
            Text { en: "Payload too large", es: "Carga demasiado grande", fr: "Charge utile trop volumineuse" },
            Text { en: "The request body exceeds {} bytes.", es: "El cuerpo de la solicitud supera los {} bytes.", fr: "Le corps de la requête dépasse {} octets." }),
        UnsupportedMediaType => (types::UNSUPPORTED_MEDIA_TYPE,
            Text { en: "Unsupported media type", es: "Tipo de medio no admitido", fr: "Type de média non pris en charge" },
            Text { en: "This endpoint accepts: {}.", es: "Este punto de acceso acepta: {}.", fr: "Ce point d'accès accepte : {}." }),
        IdempotencyMismatch => (types::IDEMPOTENCY_KEY_REUSED,
            Text { en: "Idempotency-Key reused", es: "Idempotency-Key reutilizada", fr: "Idempotency-Key réutilisée" },
            Text { en: "This Idempotency-Key was already used with a different request.", es: "Esta Idempotency-Key ya se usó con una solicitud diferente.", fr: "Cette Idempotency-Key a déjà été utilisée avec une requête différente." }),
        Internal => (types::INTERNAL_ERROR,
            Text { en: "Internal error", es: "Error interno", fr: "Erreur interne" },
            Text { en: "The service is misconfigured; the operators have been told.", es: "El servicio está mal configurado; se ha avisado a los operadores.", fr: "Le service est mal configuré ; les opérateurs ont été prévenus." }),
        StoreUnavailable => (types::STORE_UNAVAILABLE,
            Text { en: "Service unavailable", es: "Servicio no disponible", fr: "Service indisponible" },
            Text { en: "The workspace store is unavailable; nothing was saved. Retry later with the same Idempotency-Key.", es: "El almacén de espacios de trabajo no está disponible; no se guardó nada. Reintente más tarde con la misma Idempotency-Key.", fr: "Le stockage des espaces de travail est indisponible ; rien n'a été enregistré. Réessayez plus tard avec la même Idempotency-Key." }),
    };
    Spec {
        problem,
        title,
        detail,
    }
}

/// The text of a wrong-type reason.
pub(crate) fn expected(expected: Expected) -> Text {
    match expected {
        Expected::String => Text {
            en: "Must be a string.",
            es: "Debe ser una cadena.",
            fr: "Doit être une chaîne.",
        },
        Expected::Boolean => Text {
            en: "Must be a boolean.",
            es: "Debe ser un booleano.",
            fr: "Doit être un booléen.",
        },
        Expected::Object => Text {
            en: "Must be an object.",
            es: "Debe ser un objeto.",
            fr: "Doit être un objet.",
        },
        Expected::StringArray => Text {
            en: "Must be an array of strings.",
            es: "Debe ser una lista de cadenas.",
            fr: "Doit être une liste de chaînes.",
        },
        Expected::StringOrNull => Text {
            en: "Must be a string or null.",
            es: "Debe ser una cadena o null.",
            fr: "Doit être une chaîne ou null.",
        },
        Expected::Cursor => Text {
            en: "Must be a nextCursor returned by an earlier page.",
            es: "Debe ser un nextCursor devuelto por una página anterior.",
            fr: "Doit être un nextCursor renvoyé par une page précédente.",
        },
    }
}

/// The text of a field reason and its placeholder values.
pub(crate) fn reason(reason: &Reason) -> (Text, Vec<String>) {
    use Reason::*;
    match reason {
        Required => (
            Text {
                en: "This field is required.",
                es: "Este campo es obligatorio.",
                fr: "Ce champ est obligatoire.",
            },
            vec![],
        ),
        Unknown => (
            Text {
                en: "This field is not supported.",
                es: "Este campo no está admitido.",
                fr: "Ce champ n'est pas pris en charge.",
            },
            vec![],
        ),
        WrongType(t) => (expected(*t), vec![]),
        OutOfRange(min, max) => (
            Text {
                en: "Must be a number from {} to {}.",
                es: "Debe ser un número de {} a {}.",
                fr: "Doit être un nombre de {} à {}.",
            },
            vec![min.to_string(), max.to_string()],
        ),
        Empty => (
            Text {
                en: "Must not be empty.",
                es: "No debe estar vacío.",
                fr: "Ne doit pas être vide.",
            },
            vec![],
        ),
        TooLong(n) => (
            Text {
                en: "Must have at most {} characters or items.",
                es: "Debe tener como máximo {} caracteres o elementos.",
                fr: "Doit comporter au plus {} caractères ou éléments.",
            },
            vec![n.to_string()],
        ),
        NotUuid => (
            Text {
                en: "Must be a UUID.",
                es: "Debe ser un UUID.",
                fr: "Doit être un UUID.",
            },
            vec![],
        ),
        NotTimezone => (
            Text {
                en: "Must be an IANA time zone such as America/Los_Angeles.",
                es: "Debe ser una zona horaria IANA como America/Los_Angeles.",
                fr: "Doit être un fuseau horaire IANA tel que America/Los_Angeles.",
            },
            vec![],
        ),
        NotLanguageTag => (
            Text {
                en: "Must be a valid BCP 47 language tag such as en-US.",
                es: "Debe ser una etiqueta de idioma BCP 47 válida como en-US.",
                fr: "Doit être une étiquette de langue BCP 47 valide telle que en-US.",
            },
            vec![],
        ),
        NotSupportedLanguage => (
            Text {
                en: "Must be one of supportedLanguages.",
                es: "Debe ser uno de supportedLanguages.",
                fr: "Doit faire partie de supportedLanguages.",
            },
            vec![],
        ),
        NotOneOf(values) => (
            Text {
                en: "Must be one of: {}.",
                es: "Debe ser uno de: {}.",
                fr: "Doit être l'une des valeurs : {}.",
            },
            vec![values.join(", ")],
        ),
        NotDomain => (
            Text {
                en: "Must be a valid DNS domain name.",
                es: "Debe ser un nombre de dominio DNS válido.",
                fr: "Doit être un nom de domaine DNS valide.",
            },
            vec![],
        ),
        ControlCharacters => (
            Text {
                en: "Must not contain control characters.",
                es: "No debe contener caracteres de control.",
                fr: "Ne doit pas contenir de caractères de contrôle.",
            },
            vec![],
        ),
        Duplicate => (
            Text {
                en: "Must appear only once.",
                es: "Solo debe aparecer una vez.",
                fr: "Ne doit apparaître qu'une fois.",
            },
            vec![],
        ),
    }
}
