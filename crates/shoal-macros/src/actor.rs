//! `#[shoal::actor]`: an `impl` block's type becomes an actor class.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{FnArg, ImplItem, ImplItemFn, ItemImpl, Pat, ReturnType, Type, Visibility};

/// A public method with a `&self` or `&mut self` receiver.
struct Method<'a> {
    item: &'a ImplItemFn,
    args: Vec<(syn::Ident, Type)>,
}

pub(crate) fn expand(block: &ItemImpl) -> syn::Result<TokenStream> {
    let refuse = |span: proc_macro2::Span, what: &str| Err(syn::Error::new(span, format!("#[shoal::actor]: {what}")));
    if block.trait_.is_some() {
        return refuse(block.span(), "put it on the type's own `impl` block, not a trait's");
    }
    if !block.generics.params.is_empty() {
        return refuse(block.generics.span(), "an actor type cannot be generic (its class has one stable name)");
    }
    let Type::Path(path) = block.self_ty.as_ref() else {
        return refuse(block.self_ty.span(), "the type must be named by a path");
    };
    let Some(ident) = path.path.segments.last().map(|s| s.ident.clone()) else {
        return refuse(block.self_ty.span(), "the type must be named by a path");
    };
    let ty = &block.self_ty;
    let class = ident.to_string();
    let handle = format_ident!("{}Handle", ident);

    let mut methods = Vec::new();
    let mut constructors = Vec::new();
    for item in &block.items {
        let ImplItem::Fn(f) = item else { continue };
        // Private functions are the type's own helpers.
        if matches!(f.vis, Visibility::Inherited) {
            continue;
        }
        if f.sig.asyncness.is_some() || !f.sig.generics.params.is_empty() {
            return refuse(f.sig.span(), "public methods of an actor cannot be async or generic");
        }
        let mut args = Vec::new();
        let mut receiver = None;
        for input in &f.sig.inputs {
            match input {
                FnArg::Receiver(r) => receiver = Some(r),
                FnArg::Typed(arg) => {
                    let Pat::Ident(name) = arg.pat.as_ref() else {
                        return refuse(arg.pat.span(), "each parameter needs a plain name");
                    };
                    args.push((name.ident.clone(), arg.ty.as_ref().clone()));
                }
            }
        }
        match receiver {
            Some(r) if r.reference.is_none() => {
                return refuse(r.span(), "a method cannot take `self` by value: the actor stays where it is");
            }
            Some(_) => methods.push(Method { item: f, args }),
            None => constructors.push((f, args)),
        }
    }

    let arms = methods.iter().map(|m| {
        let name = &m.item.sig.ident;
        let text = name.to_string();
        let full = format!("{class}::{text}");
        let n = m.args.len();
        let decoded = m.args.iter().enumerate().map(|(i, (arg, t))| {
            quote! { let #arg: #t = ::shoal::actor::decode_arg(args, #i, #full)?; }
        });
        let names = m.args.iter().map(|(arg, _)| arg);
        quote! {
            #text => {
                ::shoal::actor::check_arity(args, #n, #full)?;
                #(#decoded)*
                let result = self.#name(#(#names),*);
                ::shoal::actor::encode(&result)
            }
        }
    });

    let calls = methods.iter().map(|m| {
        let name = &m.item.sig.ident;
        let text = name.to_string();
        let output = match &m.item.sig.output {
            ReturnType::Default => quote!(()),
            ReturnType::Type(_, t) => quote!(#t),
        };
        let params = m.args.iter().map(|(arg, t)| quote!(#arg: #t));
        let encoded = m.args.iter().map(|(arg, _)| quote!(::shoal::actor::encode(&#arg)));
        let doc = format!("Calls [`{class}::{text}`] on the actor; the future of its result.");
        let vis = &m.item.vis;
        quote! {
            #[doc = #doc]
            #vis fn #name(&self, #(#params),*) -> ::shoal::Future<#output> {
                self.actor.call(#text, ::std::vec![#(#encoded),*])
            }
        }
    });

    let registrations = constructors.iter().map(|(f, args)| {
        let name = &f.sig.ident;
        let text = format!("{class}::{name}");
        let types = args.iter().map(|(_, t)| t);
        quote! {
            ::shoal::__private::inventory::submit! {
                ::shoal::remote::Registration::new(
                    ::core::concat!(::core::module_path!(), "::", #text),
                    || ::shoal::remote::RemoteFunc::new_actor::<(#(#types,)*), _>(#ty::#name),
                )
            }
        }
    });

    // Ray's spelling, for a type with a constructor named `new`.
    let ray = constructors.iter().find(|(f, _)| f.sig.ident == "new").map(|(f, args)| {
        let vis = &f.vis;
        let params = args.iter().map(|(arg, t)| quote!(#arg: #t));
        let names = args.iter().map(|(arg, _)| arg);
        let doc = format!(
            "Ray's spelling: creates a `{class}` actor with `{class}::new` on the current client \
             (`shoal::Client::current()`)."
        );
        quote! {
            impl #ty {
                #[doc = #doc]
                #vis fn remote(#(#params),*) -> #handle {
                    ::shoal::Client::current().actor(#ty::new, (#(#names,)*))
                }
            }
        }
    });

    let handle_doc = format!(
        "A handle of a `{class}` actor: each method sends the call to the actor and returns the future of \
         its result. Clones call the same actor; it lives until the last handle its client made goes."
    );
    Ok(quote! {
        #block

        impl ::shoal::actor::ActorClass for #ty {
            const CLASS: &'static str = ::core::concat!(::core::module_path!(), "::", #class);

            fn dispatch(&mut self, method: &str, args: &[::std::vec::Vec<u8>])
                -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String>
            {
                match method {
                    #(#arms)*
                    other => ::std::result::Result::Err(::std::format!(
                        "{} has no public method {other}", <Self as ::shoal::actor::ActorClass>::CLASS
                    )),
                }
            }
        }

        impl ::shoal::TaskOutput for #ty {
            type Ok = ::shoal::actor::ActorCell;
            fn into_task_result(self) -> ::std::result::Result<::shoal::actor::ActorCell, ::shoal::TaskError> {
                ::std::result::Result::Ok(::shoal::actor::ActorCell::new(self))
            }
        }

        impl ::shoal::actor::Actor for #ty {
            type Handle = #handle;
        }

        #[doc = #handle_doc]
        #[derive(Clone, Debug)]
        #[allow(unreachable_pub)]
        pub struct #handle {
            actor: ::shoal::actor::ActorRef,
        }

        impl ::core::convert::From<::shoal::actor::ActorRef> for #handle {
            fn from(actor: ::shoal::actor::ActorRef) -> #handle {
                #handle { actor }
            }
        }

        #[allow(unreachable_pub)]
        impl #handle {
            /// The untyped handle.
            pub fn actor_ref(&self) -> &::shoal::actor::ActorRef {
                &self.actor
            }

            #(#calls)*
        }

        impl ::shoal::__private::serde::Serialize for #handle {
            fn serialize<S: ::shoal::__private::serde::Serializer>(&self, serializer: S)
                -> ::std::result::Result<S::Ok, S::Error>
            {
                ::shoal::__private::serde::Serialize::serialize(&self.actor, serializer)
            }
        }

        impl<'de> ::shoal::__private::serde::Deserialize<'de> for #handle {
            fn deserialize<D: ::shoal::__private::serde::Deserializer<'de>>(deserializer: D)
                -> ::std::result::Result<#handle, D::Error>
            {
                <::shoal::actor::ActorRef as ::shoal::__private::serde::Deserialize>::deserialize(deserializer)
                    .map(|actor| #handle { actor })
            }
        }

        #(#registrations)*

        #ray
    })
}
