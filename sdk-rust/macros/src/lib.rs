//! The macros of the tickdb module SDK: `#[table]`, `#[reducer]`, `#[tick]` and
//! `#[derive(Type)]`. Use them through the `tickdb` crate.
//!
//! Each table, reducer and tick system becomes an export named
//! `__tickdb_register__…` that the host calls after instantiating the module; it
//! registers the item with the SDK, which then describes the module to the host.
//! Mistakes the macros can see are compile errors pointing at the offending field or
//! argument; type errors point at the field's type.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    Data, DeriveInput, Error, Fields, FnArg, Ident, ItemFn, ItemStruct, LitInt, Pat, ReturnType, Token, Type,
};

/// Declares a table: `#[tickdb::table(accessor = player, public)]` on a struct with
/// named fields. Field attributes: `#[primary_key]`, `#[unique]`, `#[auto_inc]`,
/// `#[index(btree)]`, and `#[default(expr)]`: the value rows stored before the column
/// existed get when a republished module adds it. Table options: `public` (default private),
/// `index(name = pos, btree(columns = [x, y]))` for multi-column indexes,
/// `index(name = area, grid(columns = [x, y], cell = 32))` for a grid index that finds
/// the rows in a window (area-of-interest queries and subscriptions through SQL), and
/// `scheduled(reducer)` (or `scheduled(reducer, at = column)`) for schedule tables.
#[proc_macro_attribute]
pub fn table(args: TokenStream, item: TokenStream) -> TokenStream {
    table_impl(args.into(), item.into()).unwrap_or_else(Error::into_compile_error).into()
}

/// Declares a reducer: `#[tickdb::reducer]`, or a lifecycle reducer with
/// `#[tickdb::reducer(init)]`, `(client_connected)` or `(client_disconnected)`.
#[proc_macro_attribute]
pub fn reducer(args: TokenStream, item: TokenStream) -> TokenStream {
    reducer_impl(args.into(), item.into(), None).unwrap_or_else(Error::into_compile_error).into()
}

/// Declares a row-level visibility rule on a `const` string holding a query that
/// returns the rows of one table a client may see, naming the client as `:sender`:
///
/// ```ignore
/// #[tickdb::client_visibility_filter]
/// const OWN_ITEMS: &str = "SELECT * FROM item WHERE owner = :sender";
/// ```
///
/// A client sees the rows meeting at least one of a table's rules; the database's
/// owner sees every row. The server checks the rules when the module is published.
#[proc_macro_attribute]
pub fn client_visibility_filter(args: TokenStream, item: TokenStream) -> TokenStream {
    visibility_impl(args.into(), item.into()).unwrap_or_else(Error::into_compile_error).into()
}

fn visibility_impl(args: TokenStream2, item: TokenStream2) -> Result<TokenStream2, Error> {
    if !args.is_empty() {
        return Err(Error::new(args.span(), "`client_visibility_filter` takes no arguments"));
    }
    let item: syn::ItemConst = syn::parse2(item).map_err(|e| {
        Error::new(e.span(), "`client_visibility_filter` goes on a `const NAME: &str = \"SELECT ...\";`")
    })?;
    let is_str = matches!(&*item.ty, Type::Reference(r) if matches!(&*r.elem, Type::Path(p) if p.path.is_ident("str")));
    if !is_str {
        return Err(Error::new(item.ty.span(), "a visibility rule is a `&str` holding its SQL"));
    }
    let name = &item.ident;
    let register = format_ident!("__tickdb_register_visibility_{}", name.to_string().to_lowercase());
    let export = format!("__tickdb_register__visibility__{name}");
    let private = quote!(::tickdb::__private);
    Ok(quote! {
        #item
        #[allow(unsafe_code)]
        #[doc(hidden)]
        #[unsafe(export_name = #export)]
        extern "C" fn #register() {
            #private::register_visibility(#name);
        }
    })
}

/// Declares a tick system: `#[tickdb::tick(hz = 20)]` on a function taking only the
/// context. It runs every tick at that rate; `ctx.delta_time()` is the time since its
/// previous run. With `#[tickdb::tick(hz = 20, batch_calls)]`, client calls wait for
/// the system's next tick and run together in it, so each client gets at most one
/// update per tick (a game simulating at a fixed rate).
#[proc_macro_attribute]
pub fn tick(args: TokenStream, item: TokenStream) -> TokenStream {
    let tick: syn::Result<(u32, bool)> = (|| {
        let (mut hz, mut batch_calls) = (None, false);
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("hz") {
                hz = Some(meta.value()?.parse::<LitInt>()?.base10_parse::<u32>()?);
                Ok(())
            } else if meta.path.is_ident("batch_calls") {
                batch_calls = true;
                Ok(())
            } else {
                Err(meta.error("expected `hz = <ticks per second>` or `batch_calls`"))
            }
        });
        parser.parse2(args.into())?;
        let hz = hz
            .ok_or_else(|| Error::new(Span::call_site(), "a tick system needs a rate: `#[tick(hz = 20)]`"))?;
        Ok((hz, batch_calls))
    })();
    match tick {
        Ok(tick) => reducer_impl(TokenStream2::new(), item.into(), Some(tick))
            .unwrap_or_else(Error::into_compile_error)
            .into(),
        Err(e) => e.into_compile_error().into(),
    }
}

/// Makes a struct or enum usable as a column, argument or return type.
#[proc_macro_derive(Type)]
pub fn derive_type(item: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(item as DeriveInput);
    type_impl(&input).unwrap_or_else(Error::into_compile_error).into()
}

struct IndexDef {
    name: String,
    accessor: Ident,
    columns: Vec<Ident>,
    /// For a grid index, its cells' width as a power of two.
    grid: Option<i8>,
}

/// A grid's cell width: a power of two, as its exponent.
fn cell_log2(lit: &syn::Lit) -> syn::Result<i8> {
    let value = match lit {
        syn::Lit::Int(i) => i.base10_parse::<f64>()?,
        syn::Lit::Float(f) => f.base10_parse::<f64>()?,
        _ => return Err(Error::new(lit.span(), "expected a number: the cells' width")),
    };
    let log2 = value.log2();
    if !(value > 0.0 && log2.fract() == 0.0 && (-20.0..=40.0).contains(&log2)) {
        return Err(Error::new(
            lit.span(),
            "a grid's cells are a power of two wide, from 2^-20 to 2^40 (1, 2, 4, ..., 0.5)",
        ));
    }
    Ok(log2 as i8)
}

fn table_impl(args: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let mut accessor: Option<Ident> = None;
    let mut public = false;
    let mut scheduled: Option<(Ident, Option<Ident>)> = None;
    let mut indexes: Vec<IndexDef> = Vec::new();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("accessor") || meta.path.is_ident("name") {
            accessor = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("public") {
            public = true;
        } else if meta.path.is_ident("private") {
            public = false;
        } else if meta.path.is_ident("scheduled") {
            let (mut reducer, mut at) = (None, None);
            meta.parse_nested_meta(|inner| {
                if inner.path.is_ident("at") {
                    at = Some(inner.value()?.parse::<Ident>()?);
                } else if let Some(ident) = inner.path.get_ident() {
                    reducer = Some(ident.clone());
                } else {
                    return Err(inner.error("expected the scheduled reducer's name"));
                }
                Ok(())
            })?;
            let reducer = reducer.ok_or_else(|| meta.error("expected `scheduled(reducer_name)`"))?;
            scheduled = Some((reducer, at));
        } else if meta.path.is_ident("index") {
            let (mut name, mut columns, mut grid) = (None::<Ident>, Vec::new(), None);
            meta.parse_nested_meta(|inner| {
                let is_grid = inner.path.is_ident("grid");
                if inner.path.is_ident("name") || inner.path.is_ident("accessor") {
                    name = Some(inner.value()?.parse()?);
                    Ok(())
                } else if inner.path.is_ident("btree") || is_grid {
                    inner.parse_nested_meta(|c| {
                        if is_grid && c.path.is_ident("cell") {
                            grid = Some(cell_log2(&c.value()?.parse::<syn::Lit>()?)?);
                            return Ok(());
                        }
                        if !c.path.is_ident("columns") {
                            return Err(c.error(if is_grid {
                                "expected `columns = [x, y]` or `cell = <width>`"
                            } else {
                                "expected `columns = [a, b]`"
                            }));
                        }
                        let value = c.value()?;
                        let content;
                        syn::bracketed!(content in value);
                        columns =
                            Punctuated::<Ident, Token![,]>::parse_terminated(&content)?.into_iter().collect();
                        Ok(())
                    })?;
                    if is_grid && grid.is_none() {
                        return Err(inner.error("a grid index needs its cells' width: `cell = 32`"));
                    }
                    Ok(())
                } else {
                    Err(inner.error(
                        "expected `name = ...`, `btree(columns = [...])` or `grid(columns = [...], cell = ...)`",
                    ))
                }
            })?;
            let name = name.ok_or_else(|| meta.error("a table-level index needs `name = ...`"))?;
            if columns.is_empty() {
                return Err(meta.error("a table-level index needs `btree(columns = [...])`"));
            }
            indexes.push(IndexDef { name: name.to_string(), accessor: name, columns, grid });
        } else {
            return Err(meta.error(
                "unknown table option; expected `accessor = name`, `public`, `private`, \
                 `scheduled(reducer)` or `index(name = ..., btree(columns = [...]))` \
                 (or `grid(columns = [...], cell = ...)`)",
            ));
        }
        Ok(())
    });
    parser.parse2(args)?;
    let mut item: ItemStruct = syn::parse2(item)?;
    let accessor = accessor.ok_or_else(|| {
        Error::new(Span::call_site(), "a table needs a name: `#[tickdb::table(accessor = my_table)]`")
    })?;
    let table = accessor.to_string();
    let Fields::Named(fields) = &mut item.fields else {
        return Err(Error::new(item.ident.span(), "a table is a struct with named fields"));
    };

    let mut primary_key: Option<Ident> = None;
    let mut unique: Vec<(Ident, Type)> = Vec::new();
    let mut auto_inc: Vec<Ident> = Vec::new();
    let mut column_types: Vec<(Ident, Type)> = Vec::new();
    let mut defaults: Vec<(Ident, Type, syn::Expr)> = Vec::new();
    for field in fields.named.iter_mut() {
        let name = field.ident.clone().expect("named field");
        let mut kept = Vec::new();
        for attr in std::mem::take(&mut field.attrs) {
            let path = attr.path();
            if path.is_ident("primary_key") {
                if primary_key.is_some() {
                    return Err(Error::new(attr.path().span(), "a table has at most one #[primary_key]"));
                }
                primary_key = Some(name.clone());
            } else if path.is_ident("unique") {
                unique.push((name.clone(), field.ty.clone()));
            } else if path.is_ident("auto_inc") {
                if !is_integer(&field.ty) {
                    return Err(Error::new(
                        field.ty.span(),
                        "#[auto_inc] needs an integer column (u8 to u128, i8 to i128)",
                    ));
                }
                auto_inc.push(name.clone());
            } else if path.is_ident("default") {
                let expr: syn::Expr = attr.parse_args().map_err(|e| {
                    Error::new(e.span(), "expected `#[default(value)]`, e.g. `#[default(0)]`")
                })?;
                defaults.push((name.clone(), field.ty.clone(), expr));
            } else if path.is_ident("index") {
                let mut btree = false;
                attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("btree") {
                        btree = true;
                        Ok(())
                    } else {
                        Err(meta.error("only `#[index(btree)]` is supported"))
                    }
                })?;
                if !btree {
                    return Err(Error::new(attr.span(), "expected `#[index(btree)]`"));
                }
                indexes.push(IndexDef {
                    name: format!("{table}_{name}_idx"),
                    accessor: name.clone(),
                    columns: vec![name.clone()],
                    grid: None,
                });
            } else {
                kept.push(attr);
            }
        }
        field.attrs = kept;
        column_types.push((name, field.ty.clone()));
    }
    let column_type = |name: &Ident| -> syn::Result<Type> {
        column_types
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, ty)| ty.clone())
            .ok_or_else(|| Error::new(name.span(), format!("table `{table}` has no column `{name}`")))
    };

    let row = &item.ident;
    let vis = &item.vis;
    let handle = format_ident!("{}__TableHandle", accessor);
    let table_ref = format_ident!("__TICKDB_TABLE_{}", accessor);
    let private = quote!(::tickdb::__private);

    let mut statics = Vec::new();
    let mut methods = Vec::new();
    let mut unique_all: Vec<(Ident, String)> = Vec::new();
    if let Some(pk) = &primary_key {
        unique_all.push((pk.clone(), format!("{table}_pkey")));
    }
    for (name, _) in &unique {
        if primary_key.as_ref() != Some(name) {
            unique_all.push((name.clone(), format!("{table}_{name}_key")));
        }
    }
    for (column, index_name) in &unique_all {
        let index_ref = format_ident!("__TICKDB_INDEX_{}_{}", accessor, column);
        let ty = column_type(column)?;
        statics.push(quote! {
            #[allow(non_upper_case_globals)]
            static #index_ref: #private::IndexRef = #private::IndexRef::new(&#table_ref, #index_name);
        });
        methods.push(quote! {
            /// Find, update or delete rows by this unique column.
            #vis fn #column(&self) -> ::tickdb::UniqueColumn<#row, #ty> {
                ::tickdb::UniqueColumn::new(&#index_ref)
            }
        });
    }
    // Grid indexes serve SQL (subscriptions and queries over windows); reducers get no
    // accessor for them.
    for index in indexes.iter().filter(|i| i.grid.is_none()) {
        let index_ref = format_ident!("__TICKDB_INDEX_{}_{}", accessor, index.accessor);
        let index_name = &index.name;
        let method = &index.accessor;
        let types = index.columns.iter().map(&column_type).collect::<syn::Result<Vec<_>>>()?;
        statics.push(quote! {
            #[allow(non_upper_case_globals)]
            static #index_ref: #private::IndexRef = #private::IndexRef::new(&#table_ref, #index_name);
        });
        methods.push(quote! {
            /// Filter or delete rows through this btree index.
            #vis fn #method(&self) -> ::tickdb::BTreeIndex<#row, (#(#types,)*)> {
                ::tickdb::BTreeIndex::new(&#index_ref)
            }
        });
    }

    let columns = column_types.iter().map(|(name, ty)| {
        let name = name.to_string();
        quote_spanned!(ty.span()=> .column(#name, <#ty as ::tickdb::Type>::value_type()))
    });
    let column_defaults = defaults.iter().map(|(name, ty, expr)| {
        let name = name.to_string();
        quote_spanned!(expr.span()=> .column_default(#name, {
            let value: #ty = #expr;
            ::tickdb::Type::to_bytes(&value)
        }))
    });
    let pk = primary_key.iter().map(|pk| {
        let pk = pk.to_string();
        quote!(.primary_key([#pk]))
    });
    let uniques = unique.iter().filter(|(n, _)| primary_key.as_ref() != Some(n)).map(|(n, _)| {
        let n = n.to_string();
        quote!(.unique([#n]))
    });
    let btrees = indexes.iter().map(|index| {
        let name = &index.name;
        let cols = index.columns.iter().map(Ident::to_string);
        match index.grid {
            Some(cell_log2) => quote!(.named_grid_index(#name, [#(#cols),*], #cell_log2)),
            None => quote!(.named_btree_index(#name, [#(#cols),*])),
        }
    });
    let incs = auto_inc.iter().map(|c| {
        let c = c.to_string();
        quote!(.auto_inc(#c))
    });
    let access = if public { quote!(Public) } else { quote!(Private) };
    let schedule = match &scheduled {
        None => quote!(None),
        Some((reducer, at)) => {
            let at = match at {
                Some(at) => at.to_string(),
                None => column_types
                    .iter()
                    .find(|(_, ty)| last_segment(ty).as_deref() == Some("ScheduleAt"))
                    .map(|(n, _)| n.to_string())
                    .ok_or_else(|| {
                        Error::new(
                            reducer.span(),
                            "a schedule table needs a `ScheduleAt` column (or name it: `scheduled(reducer, at = column)`)",
                        )
                    })?,
            };
            let reducer = reducer.to_string();
            quote!(Some((#reducer, #at)))
        }
    };
    let register = format_ident!("__tickdb_register_table_{}", accessor);
    let export = format!("__tickdb_register__table__{table}");
    let type_impl = product_impl(row, &fields_of(&item.fields))?;
    let has_auto_inc = !auto_inc.is_empty();

    Ok(quote! {
        #item

        #type_impl

        #[allow(non_upper_case_globals)]
        static #table_ref: #private::TableRef = #private::TableRef::new(#table);
        #(#statics)*

        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy)]
        #vis struct #handle {
            _private: (),
        }

        impl ::tickdb::Table for #handle {
            type Row = #row;
            const AUTO_INC: bool = #has_auto_inc;
            fn table_ref(&self) -> &'static #private::TableRef {
                &#table_ref
            }
        }

        impl #handle {
            #(#methods)*
        }

        /// The accessor of the table: `ctx.db.#accessor()`.
        #[allow(non_camel_case_types)]
        #vis trait #accessor {
            fn #accessor(&self) -> #handle;
        }

        impl #accessor for ::tickdb::Local {
            fn #accessor(&self) -> #handle {
                #handle { _private: () }
            }
        }

        #[allow(unsafe_code)]
        #[doc(hidden)]
        #[unsafe(export_name = #export)]
        extern "C" fn #register() {
            let schema = #private::TableSchema::builder(#table)
                #(#columns)*
                #(#column_defaults)*
                #(#pk)*
                #(#uniques)*
                #(#btrees)*
                #(#incs)*
                .access(#private::TableAccess::#access)
                .build();
            #private::register_table(schema, #schedule);
        }
    })
}

fn last_segment(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    }
}

fn is_integer(ty: &Type) -> bool {
    let ints = ["u8", "u16", "u32", "u64", "u128", "i8", "i16", "i32", "i64", "i128"];
    last_segment(ty).is_some_and(|s| ints.contains(&s.as_str()))
}

/// `tick`: a tick system's rate and whether it batches calls.
fn reducer_impl(
    args: TokenStream2,
    item: TokenStream2,
    tick: Option<(u32, bool)>,
) -> syn::Result<TokenStream2> {
    let mut lifecycle = None;
    let parser = syn::meta::parser(|meta| {
        for (name, variant) in [
            ("init", "Init"),
            ("client_connected", "ClientConnected"),
            ("client_disconnected", "ClientDisconnected"),
        ] {
            if meta.path.is_ident(name) {
                lifecycle = Some(format_ident!("{}", variant));
                return Ok(());
            }
        }
        Err(meta.error("expected `init`, `client_connected` or `client_disconnected`"))
    });
    parser.parse2(args)?;
    let item: ItemFn = syn::parse2(item)?;
    let name = &item.sig.ident;
    let mut inputs = item.sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Typed(_)) => {}
        Some(arg @ FnArg::Receiver(_)) => return Err(Error::new(arg.span(), "a reducer is a free function")),
        None => {
            return Err(Error::new(
                item.sig.paren_token.span.join(),
                "a reducer's first argument is the context: `ctx: &ReducerContext`",
            ));
        }
    }
    let mut params = Vec::new();
    for arg in inputs {
        let FnArg::Typed(arg) = arg else {
            return Err(Error::new(arg.span(), "a reducer is a free function"));
        };
        let Pat::Ident(pat) = &*arg.pat else {
            return Err(Error::new(arg.pat.span(), "reducer arguments must be plain names"));
        };
        params.push((pat.ident.clone(), (*arg.ty).clone()));
    }
    if let Some((arg, _)) = params.first() {
        if lifecycle.is_some() {
            return Err(Error::new(arg.span(), "a lifecycle reducer takes only the context"));
        }
        if tick.is_some() {
            return Err(Error::new(arg.span(), "a tick system takes only the context"));
        }
    }
    let returns = match &item.sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => quote!(#ty),
    };
    let return_span = item.sig.output.span();
    let private = quote!(::tickdb::__private);
    let reducer_name = name.to_string();
    let arg_names: Vec<_> = params.iter().map(|(n, _)| n.clone()).collect();
    let decode = params.iter().map(|(n, ty)| {
        let label = n.to_string();
        quote_spanned!(ty.span()=> let #n = #private::arg::<#ty>(r, #label)?;)
    });
    let param_types = params.iter().map(|(n, ty)| {
        let label = n.to_string();
        quote_spanned!(ty.span()=> (#label, <#ty as ::tickdb::Type>::value_type()))
    });
    let invoke = format_ident!("__tickdb_invoke_{}", name);
    let register = format_ident!("__tickdb_register_{}", name);
    let outcome = quote_spanned!(return_span=> <#returns as ::tickdb::ReducerResult>::into_outcome(result));
    let return_type = quote_spanned!(return_span=> <#returns as ::tickdb::ReducerResult>::return_type());
    let registration = match tick {
        Some((hz, batch_calls)) => {
            let export = format!("__tickdb_register__tick__{reducer_name}");
            quote! {
                #[allow(unsafe_code)]
                #[doc(hidden)]
                #[unsafe(export_name = #export)]
                extern "C" fn #register() {
                    #private::register_tick(#reducer_name, #hz, #batch_calls, #return_type, #invoke);
                }
            }
        }
        None => {
            let export = format!("__tickdb_register__reducer__{reducer_name}");
            let lifecycle = match &lifecycle {
                Some(l) => quote!(Some(#private::Lifecycle::#l)),
                None => quote!(None),
            };
            quote! {
                #[allow(unsafe_code)]
                #[doc(hidden)]
                #[unsafe(export_name = #export)]
                extern "C" fn #register() {
                    #private::register_reducer(
                        #reducer_name,
                        vec![#(#param_types),*],
                        #return_type,
                        #lifecycle,
                        #invoke,
                    );
                }
            }
        }
    };
    Ok(quote! {
        #item

        #[doc(hidden)]
        fn #invoke(
            ctx: &::tickdb::ReducerContext,
            r: &mut #private::Reader<'_>,
        ) -> Result<Option<Vec<u8>>, String> {
            #(#decode)*
            let result = #name(ctx, #(#arg_names),*);
            #outcome
        }

        #registration
    })
}

/// Fields as (accessor, label, type): named fields by name, tuple fields by position.
fn fields_of(fields: &Fields) -> Vec<(TokenStream2, String, Type)> {
    fields
        .iter()
        .enumerate()
        .map(|(i, f)| match &f.ident {
            Some(name) => (quote!(#name), name.to_string(), f.ty.clone()),
            None => {
                let index = syn::Index::from(i);
                (quote!(#index), i.to_string(), f.ty.clone())
            }
        })
        .collect()
}

/// Types are inlined into the module definition, so a type cannot contain itself.
fn check_not_recursive(name: &Ident, ty: &Type) -> syn::Result<()> {
    fn mentions(tokens: TokenStream2, name: &Ident) -> bool {
        tokens.into_iter().any(|t| match t {
            proc_macro2::TokenTree::Ident(i) => i == *name,
            proc_macro2::TokenTree::Group(g) => mentions(g.stream(), name),
            _ => false,
        })
    }
    if mentions(quote!(#ty), name) {
        return Err(Error::new(
            ty.span(),
            format!("`{name}` cannot contain itself: tickdb types are not recursive"),
        ));
    }
    Ok(())
}

fn product_impl(name: &Ident, fields: &[(TokenStream2, String, Type)]) -> syn::Result<TokenStream2> {
    for (_, _, ty) in fields {
        check_not_recursive(name, ty)?;
    }
    let private = quote!(::tickdb::__private);
    let types = fields
        .iter()
        .map(|(_, label, ty)| quote_spanned!(ty.span()=> (#label, <#ty as ::tickdb::Type>::value_type())));
    let encode = fields
        .iter()
        .map(|(access, _, ty)| quote_spanned!(ty.span()=> ::tickdb::Type::encode(&self.#access, out);));
    let decode = fields
        .iter()
        .map(|(access, _, ty)| quote_spanned!(ty.span()=> #access: <#ty as ::tickdb::Type>::decode(r)?,));
    Ok(quote! {
        impl ::tickdb::Type for #name {
            fn value_type() -> #private::ValueType {
                #private::product(vec![#(#types),*])
            }
            fn encode(&self, out: &mut Vec<u8>) {
                #(#encode)*
            }
            fn decode(r: &mut #private::Reader<'_>) -> Result<Self, #private::DecodeError> {
                Ok(#name { #(#decode)* })
            }
        }
    })
}

fn type_impl(input: &DeriveInput) -> syn::Result<TokenStream2> {
    if !input.generics.params.is_empty() {
        return Err(Error::new(input.generics.span(), "tickdb::Type cannot be derived for generic types"));
    }
    let name = &input.ident;
    let private = quote!(::tickdb::__private);
    match &input.data {
        Data::Struct(s) => product_impl(name, &fields_of(&s.fields)),
        Data::Enum(e) => {
            if e.variants.is_empty() {
                return Err(Error::new(name.span(), "an enum needs at least one variant"));
            }
            if e.variants.len() > 256 {
                return Err(Error::new(name.span(), "an enum may have at most 256 variants"));
            }
            let count = e.variants.len();
            let mut types = Vec::new();
            let mut encode = Vec::new();
            let mut decode = Vec::new();
            for (tag, variant) in e.variants.iter().enumerate() {
                for field in &variant.fields {
                    check_not_recursive(name, &field.ty)?;
                }
                let tag = tag as u8;
                let v = &variant.ident;
                let label = v.to_string();
                let fields = fields_of(&variant.fields);
                match &variant.fields {
                    Fields::Unit => {
                        types.push(quote!((#label, #private::ValueType::unit())));
                        encode.push(quote!(#name::#v => out.push(#tag),));
                        decode.push(quote!(#tag => #name::#v,));
                    }
                    Fields::Unnamed(u) if u.unnamed.len() == 1 => {
                        let ty = &u.unnamed[0].ty;
                        types.push(
                            quote_spanned!(ty.span()=> (#label, <#ty as ::tickdb::Type>::value_type())),
                        );
                        encode.push(quote!(#name::#v(value) => { out.push(#tag); ::tickdb::Type::encode(value, out); }));
                        decode.push(quote_spanned!(ty.span()=> #tag => #name::#v(<#ty as ::tickdb::Type>::decode(r)?),));
                    }
                    Fields::Unnamed(_) | Fields::Named(_) => {
                        let field_types = fields.iter().map(|(_, label, ty)| {
                            quote_spanned!(ty.span()=> (#label, <#ty as ::tickdb::Type>::value_type()))
                        });
                        types.push(quote!((#label, #private::product(vec![#(#field_types),*]))));
                        let binds: Vec<_> = (0..fields.len()).map(|i| format_ident!("f{}", i)).collect();
                        let pattern = match &variant.fields {
                            Fields::Named(_) => {
                                let names = fields.iter().map(|(access, _, _)| access);
                                quote!({ #(#names: #binds),* })
                            }
                            _ => quote!(( #(#binds),* )),
                        };
                        encode.push(quote!(#name::#v #pattern => { out.push(#tag); #(::tickdb::Type::encode(#binds, out);)* }));
                        let reads =
                            fields.iter().map(|(_, _, ty)| quote!(<#ty as ::tickdb::Type>::decode(r)?));
                        let build = match &variant.fields {
                            Fields::Named(_) => {
                                let names = fields.iter().map(|(access, _, _)| access);
                                quote!(#name::#v { #(#names: #reads),* })
                            }
                            _ => quote!(#name::#v( #(#reads),* )),
                        };
                        decode.push(quote!(#tag => #build,));
                    }
                }
            }
            Ok(quote! {
                impl ::tickdb::Type for #name {
                    fn value_type() -> #private::ValueType {
                        #private::sum(vec![#(#types),*])
                    }
                    fn encode(&self, out: &mut Vec<u8>) {
                        match self {
                            #(#encode)*
                        }
                    }
                    fn decode(r: &mut #private::Reader<'_>) -> Result<Self, #private::DecodeError> {
                        Ok(match #private::take_tag(r, #count)? {
                            #(#decode)*
                            _ => unreachable!("take_tag checks the tag"),
                        })
                    }
                }
            })
        }
        Data::Union(_) => Err(Error::new(name.span(), "tickdb::Type cannot be derived for unions")),
    }
}
